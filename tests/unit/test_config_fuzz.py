"""Corrupted configuration files: the loader either accepts them (the corruption was harmless) or raises
ConfigError naming the file; never another exception type, and the CLI never prints a traceback.

Corruptions of a copy of ``conf/`` (the shipped payments pipeline and kappalake.yml): a key deleted, a
value's type changed, junk characters inserted, a key duplicated, the file truncated, a line
mis-indented. Loaded for each target with ``load_target`` and ``load_pipeline``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kappalake.config.loader import load_pipeline, load_target
from kappalake.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
PIPELINE = Path("pipelines") / "payments.yml"
PROJECT = Path("kappalake.yml")
TARGETS = ("local", "databricks", "k8s")
ENV = {
    "KAPPALAKE_HOME": "/tmp/kappalake-config-fuzz",
    "KAFKA_BOOTSTRAP_SERVERS": "broker:9092",
    "KAFKA_SASL_JAAS_CONFIG": "org.apache.kafka.common.security.plain.PlainLoginModule required;",
    "KAPPALAKE_STORAGE_ROOT": "s3a://bucket/kappalake",
    "CLICKHOUSE_DSN": "https://user:pw@clickhouse:8443/db",
}

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------- corruptions

def key_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a mapping key or list item of a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from key_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield prefix + (i,)
            yield from key_paths(value, prefix + (i,))


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


YAML_SPECIALS = [
    ":", ": ", "- ", "? ", "[", "]", "{", "}", ",", "&a ", "*a", "*undefined", "!", "!!", "!!int ", "!!timestamp ",
    "!!binary ", "!!python/object:os.system ", "%YAML 1.1\n", "---\n", "...\n", "|", ">", "#", "'", '"', "\t", "\x00",
    "\ufeff", "\x85", "\u2028", "@", "`", "<<: *a\n", "\\", "${", "${X", "}", "\r", "\n", "  ", "~", "é", "\U0001f600",
]
# Whole hostile lines: complex keys, bad tags, nesting a YAML parser recurses into.
HOSTILE_LINES = [
    "[a, b]: 1", "? [a, b]\n: 1", "{a: 1}: x", "? {a: 1}\n: 2", "x: !!timestamp soon", "x: !!int abc",
    "x: !!float x", "x: !!bool maybe", "x: !!binary '%%%'", "x: !!set {a}", "x: !!omap [a]", "x: !!python/name:os.system",
    "x: &a [*a]", "<<: {a: 1}", "<<: [1, 2]", "x: " + "[" * 300 + "]" * 300,
]
junk = st.one_of(st.text(max_size=8), st.sampled_from(YAML_SPECIALS),
                 st.lists(st.sampled_from(YAML_SPECIALS), min_size=1, max_size=4).map("".join))
junk_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.just(10 ** 400), st.floats(), st.text(max_size=12),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(["${", "${UNSET_VARIABLE}", "${A:-", "${A:-${B}", "$${X}", "9" * 400 + " seconds",
                     "1" + "0" * 400 + " days", "0 seconds", "-5 minutes", "1e9 hours", "nan seconds", "decimal(99,99)",
                     "decimal(1,5)", "timestamp", "local-stack", "chdb://relative/path", "https://u:secret@h:1/db", "",
                     "a" * 300]),
)


@st.composite
def corrupted(draw, original: str) -> tuple[str, str]:
    """(corruption kind, corrupted text) of a YAML document."""
    kind = draw(st.sampled_from(["delete_key", "delete_line", "change_type", "insert_junk", "hostile_line",
                                 "duplicate_key", "truncate", "wrong_indentation"]))
    lines = original.splitlines(keepends=True)
    if kind in ("delete_key", "change_type"):
        data = yaml.safe_load(original)
        paths = list(key_paths(data))
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        if kind == "delete_key":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(junk_values)
        return kind, yaml.safe_dump(data, sort_keys=False, allow_unicode=draw(st.booleans()))
    if kind == "delete_line":
        i = draw(st.integers(0, len(lines) - 1))
        return kind, "".join(lines[:i] + lines[i + 1:])
    if kind == "insert_junk":
        text = original
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(junk) + text[at:]
        return kind, text
    if kind == "hostile_line":
        i = draw(st.integers(0, len(lines)))
        indent = draw(st.sampled_from(["", "  ", "    "]))
        return kind, "".join(lines[:i] + [indent + draw(st.sampled_from(HOSTILE_LINES)) + "\n"] + lines[i:])
    if kind == "duplicate_key":
        keyed = [i for i, line in enumerate(lines) if ":" in line and not line.lstrip().startswith("#")]
        i = draw(st.sampled_from(keyed))
        j = draw(st.integers(i + 1, len(lines)))  # the copy after the original, same indentation
        return kind, "".join(lines[:j] + [lines[i] if lines[i].endswith("\n") else lines[i] + "\n"] + lines[j:])
    if kind == "truncate":
        return kind, original[:draw(st.integers(0, len(original) - 1))]
    # wrong_indentation
    i = draw(st.sampled_from([i for i, line in enumerate(lines) if line.strip()]))
    line = lines[i]
    body = line.lstrip(" ")
    indent = len(line) - len(body)
    new = draw(st.sampled_from(["more", "less", "tab", "odd"]))
    if new == "more":
        line = " " * (indent + draw(st.integers(1, 4))) + body
    elif new == "less":
        line = " " * max(0, indent - draw(st.integers(1, 4))) + body
    elif new == "tab":
        line = "\t" + body
    else:
        line = " " * (indent + 1) + body
    return kind, "".join(lines[:i] + [line] + lines[i + 1:])


# --------------------------------------------------------------------------- the check

def fresh_conf() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="kl-conf-fuzz-"))
    shutil.copytree(CONF, folder / "conf")
    return folder / "conf"


def outcome(load: Callable[[], object], files: list[Path]) -> str:
    """'loaded' or 'ConfigError'; anything else fails the test. A ConfigError must name one of ``files``."""
    try:
        load()
    except ConfigError as exc:
        message = str(exc)
        assert message.strip(), "empty ConfigError message"
        assert any(str(f) in message for f in files), f"the message names no file ({files}): {message}"
        return "ConfigError"
    return "loaded"


def check_corruption(relative: Path, text: str, target: str) -> None:
    conf = fresh_conf()
    try:
        path = conf / relative
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        project, pipeline = conf / PROJECT, conf / PIPELINE
        outcome(lambda: load_target(conf, target, env=ENV), [project])
        outcome(lambda: load_pipeline("payments", conf, target, env=ENV), [pipeline, project])
    finally:
        shutil.rmtree(conf.parent, ignore_errors=True)


PIPELINE_TEXT = (CONF / PIPELINE).read_text()
PROJECT_TEXT = (CONF / PROJECT).read_text()


def test_the_uncorrupted_files_load_for_every_target() -> None:
    for target in TARGETS:
        assert load_target(CONF, target, env=ENV).name == target
        assert load_pipeline("payments", CONF, target, env=ENV).name == "payments"


@SETTINGS
@given(corruption=corrupted(PIPELINE_TEXT), target=st.sampled_from(TARGETS))
def test_a_corrupted_pipeline_file_loads_or_raises_config_error_naming_it(corruption: tuple[str, str],
                                                                           target: str) -> None:
    check_corruption(PIPELINE, corruption[1], target)


@SETTINGS
@given(corruption=corrupted(PROJECT_TEXT), target=st.sampled_from(TARGETS))
def test_a_corrupted_project_file_loads_or_raises_config_error_naming_it(corruption: tuple[str, str],
                                                                          target: str) -> None:
    check_corruption(PROJECT, corruption[1], target)


# Hostile constructs a fuzzer reaches only rarely, each checked on its own (one line added to each file).
HOSTILE = {
    "complex_key_list": "[a, b]: 1\n",
    "complex_key_map": "? {a: 1}\n: 2\n",
    "bad_timestamp_tag": "extra: !!timestamp soon\n",
    "bad_int_tag": "extra: !!int abc\n",
    "deep_nesting": "extra: " + "[" * 2000 + "]" * 2000 + "\n",
}


@pytest.mark.parametrize("relative", [PIPELINE, PROJECT], ids=["pipeline", "project"])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_yaml_constructs_raise_config_error(relative: Path, name: str) -> None:
    original = (CONF / relative).read_text()
    check_corruption(relative, HOSTILE[name] + original, "local")


@pytest.mark.parametrize("value", ["[spark]", "5", "just text", "[1, 2]"])
def test_defaults_that_are_not_a_mapping_raise_config_error(value: str) -> None:
    text = PROJECT_TEXT.replace("defaults:\n  spark:\n    conf:\n      spark.sql.streaming.metricsEnabled: \"true\"\n",
                                f"defaults: {value}\n")
    assert text != PROJECT_TEXT
    check_corruption(PROJECT, text, "local")


@pytest.mark.parametrize("duration", ["9" * 400 + " seconds", "1" + "0" * 320 + " minutes"])
def test_a_duration_too_large_for_a_float_raises_config_error(duration: str) -> None:
    text = PIPELINE_TEXT.replace("watermark: 10 minutes", f"watermark: \"{duration}\"")
    assert text != PIPELINE_TEXT
    check_corruption(PIPELINE, text, "local")


# --------------------------------------------------------------------------- the CLI

CLI_CASES = {
    "wrong_indentation": (PIPELINE, PIPELINE_TEXT.replace("\n  partitions: 3", "\n   partitions: 3")),
    "unknown_key": (PIPELINE, PIPELINE_TEXT.replace("  partitions: 3", "  partitions: 3\n  partition: 3")),
    "complex_key": (PROJECT, "[a, b]: 1\n" + PROJECT_TEXT),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_status_on_a_corrupted_conf_prints_an_error_not_a_traceback(case: str, tmp_path: Path) -> None:
    relative, text = CLI_CASES[case]
    assert text != (CONF / relative).read_text()
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / relative).write_text(text)
    env = {**os.environ, "KAPPALAKE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO / "src")}
    env.pop("KAPPALAKE_CONF", None)
    result = subprocess.run([sys.executable, "-m", "kappalake.cli.app", "--conf", str(conf), "status"],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == ConfigError.exit_code, (result.returncode, result.stderr[-2000:])
    assert str(conf / relative) in result.stderr, result.stderr
