"""The supported Spark lines (``kappalake.versions``): one setting (``KAPPALAKE_SPARK``) selects a line; its
pins are coherent with pyproject.toml, the README table, this interpreter and the scripts; an unknown line
fails with a message naming the allowed values (module, CLI and setup script)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from kappalake import versions
from kappalake.errors import ConfigError, DependencyError
from kappalake.runtime.jars import require_matching_python_packages, spark_jars
from kappalake.runtime.paths import HomeLayout

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
ALLOWED = "use one of 4.0, 4.1, 4.2 (default 4.2)"


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != versions.LINE_ENV}
    return {**env, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200", **values}


def test_default_line_is_spark_42_with_delta_44() -> None:
    default = versions.selected_line({})
    assert versions.DEFAULT_LINE == "4.2" and default is versions.default_line()
    assert (default.spark, default.delta) == ("4.2.0", "4.4.0")
    assert default.packages == ("org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0",
                                "io.delta:delta-spark_4.2_2.13:4.4.0", "org.apache.spark:spark-avro_2.13:4.2.0")
    assert default.pip_requirements == ("pyspark==4.2.0", "delta-spark==4.4.0")


@pytest.mark.parametrize(("name", "spark", "delta", "jar"), [
    ("4.0", "4.0.0", "4.0.0", "io.delta:delta-spark_2.13:4.0.0"),
    ("4.1", "4.1.1", "4.3.1", "io.delta:delta-spark_4.1_2.13:4.3.1"),
    ("4.2", "4.2.0", "4.4.0", "io.delta:delta-spark_4.2_2.13:4.4.0"),
])
def test_each_line_pins_spark_delta_and_the_delta_jar_name(name: str, spark: str, delta: str, jar: str) -> None:
    line = versions.selected_line({versions.LINE_ENV: name})
    assert (line.name, line.spark, line.delta, line.delta_package) == (name, spark, delta, jar)
    assert line.kafka_package == f"org.apache.spark:spark-sql-kafka-0-10_2.13:{spark}"
    assert versions.line_of_spark(spark) is line
    assert versions.line_of_spark(spark.rsplit(".", 1)[0] + ".9") is line  # a runtime's patch release


def test_delta_jar_name_changes_with_delta_41() -> None:
    assert versions.delta_artifact("4.0.0", "4.0.0") == "delta-spark_2.13"
    assert versions.delta_artifact("4.0.1", "4.0.1") == "delta-spark_2.13"
    assert versions.delta_artifact("4.1.0", "4.0.1") == "delta-spark_4.0_2.13"
    assert versions.delta_artifact("4.4.0", "4.2.0") == "delta-spark_4.2_2.13"


@pytest.mark.parametrize("value", ["3.5", "4.3", "4.2.0", "latest"])
def test_an_unknown_line_names_the_allowed_values(value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"KAPPALAKE_SPARK={value!r} is not a supported Spark line; "
                                                    f"{ALLOWED}")):
        versions.selected_line({versions.LINE_ENV: value})


def test_module_constants_follow_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(versions.LINE_ENV, "4.0")
    assert (versions.SPARK_VERSION, versions.DELTA_VERSION) == ("4.0.0", "4.0.0")
    assert versions.SPARK_PACKAGES == versions.LINES["4.0"].packages
    monkeypatch.setenv(versions.LINE_ENV, " ")
    assert versions.SPARK_VERSION == "4.2.0"
    monkeypatch.setenv(versions.LINE_ENV, "9")
    with pytest.raises(ConfigError, match=re.escape(ALLOWED)):
        _ = versions.SPARK_VERSION


def test_versions_module_prints_pins_and_refuses_an_unknown_line() -> None:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kappalake.versions", *args], capture_output=True, text=True,
                              env=_env(**env), timeout=60)

    shown = dict(line.split("=", 1) for line in run(KAPPALAKE_SPARK="4.0").stdout.splitlines())
    assert shown["PIP"] == "'pyspark==4.0.0 delta-spark==4.0.0'"
    assert run("--get", "spark_packages").stdout.strip() == ",".join(versions.default_line().packages)
    assert run("--line", "4.1", "--get", "docker_build_args").stdout.strip() == \
        "--build-arg KAPPALAKE_SPARK=4.1 --build-arg SPARK_VERSION=4.1.1"
    bad = run(KAPPALAKE_SPARK="5.0")
    assert bad.returncode == 2 and bad.stdout == "" and ALLOWED in bad.stderr and "Traceback" not in bad.stderr


def test_cli_refuses_an_unknown_line_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "kappalake.cli.app", "setup"], capture_output=True, text=True,
                            env=_env(KAPPALAKE_SPARK="3.5", KAPPALAKE_HOME=str(tmp_path)), cwd=REPO, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "KAPPALAKE_SPARK='3.5' is not a supported Spark line" in result.stderr and ALLOWED in result.stderr
    assert "Traceback" not in result.stderr


def test_setup_script_refuses_an_unknown_line_before_installing_anything(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True,
                            env=_env(KAPPALAKE_SPARK="4.9", KAPPALAKE_HOME=str(tmp_path / "home"),
                                     KAPPALAKE_VENV=str(tmp_path / "venv")), timeout=300)
    assert result.returncode != 0
    assert ALLOWED in result.stderr and "KAPPALAKE_SPARK=4.9 is not a supported Spark line" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_pyproject_admits_every_line_and_nothing_newer() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = {r.name: r for r in map(Requirement, project["dependencies"])}
    for line in versions.LINES.values():
        assert requirements["pyspark"].specifier.contains(line.spark), line.name
        assert requirements["delta-spark"].specifier.contains(line.delta), line.name
    newest = max(versions.LINES.values(), key=lambda ln: tuple(map(int, ln.spark.split("."))))
    bumped = newest.spark.rsplit(".", 1)[0] + "." + str(int(newest.spark.rsplit(".", 1)[1]) + 1)
    assert not requirements["pyspark"].specifier.contains(bumped)  # e.g. 4.2.1: no Kafka connector on Maven
    assert "compat" in " ".join(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
                                ["ini_options"]["markers"])


@pytest.mark.compat
def test_this_interpreter_has_the_selected_lines_python_packages() -> None:
    """setup.sh installed the line ``KAPPALAKE_SPARK`` names (the default line in .venv)."""
    line = versions.selected_line()
    assert metadata.version("pyspark") == line.spark
    assert metadata.version("delta-spark") == line.delta
    require_matching_python_packages(line)


@pytest.mark.compat
def test_another_lines_jars_are_refused_in_this_interpreter() -> None:
    other = next(ln for ln in versions.LINES.values() if ln.spark != metadata.version("pyspark"))
    with pytest.raises(DependencyError) as error:
        require_matching_python_packages(other)
    message = str(error.value)
    assert f"KAPPALAKE_SPARK={other.name} selects Spark {other.spark}" in message
    assert f"pyspark {metadata.version('pyspark')}" in message
    assert f"KAPPALAKE_SPARK={other.name} bash scripts/setup.sh" in message


def test_each_line_keeps_its_own_jar_manifest(tmp_path: Path) -> None:
    layout = HomeLayout(home=tmp_path, cache=tmp_path / "cache")
    paths = {layout.spark_jars_manifest(name) for name in versions.LINES}
    assert len(paths) == len(versions.LINES)
    assert spark_jars(layout, versions.LINES["4.0"]) is None


def test_readme_versions_table_is_the_modules_table() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Versions\n", 1)[1].split("\n## ", 1)[0]
    assert versions.markdown_table() in section, "README *Versions*: paste `python -m kappalake.versions --table`"
