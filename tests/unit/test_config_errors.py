"""Bad configuration files: each must raise ConfigError saying where (file, line, key) and what was expected.

The inputs live in ``tests/data/bad_configs/``: a folder per case holding ``kappalake.yml`` and/or
``pipelines/orders.yml``, or a single pipeline file loaded with ``load_pipeline_file``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kappalake.config.loader import load_pipeline, load_pipeline_file, load_project, load_target
from kappalake.errors import ConfigError, KappalakeError

DATA = Path(__file__).resolve().parents[1] / "data" / "bad_configs"
CONF = Path(__file__).resolve().parents[2] / "conf"
ENV = {"KAPPALAKE_HOME": "/tmp/kappalake-test-home"}


@dataclass(frozen=True)
class Bad:
    """One bad input and what its error message must say."""

    case: str  # folder or file under DATA
    how: str  # pipeline | project | target | file
    expected: tuple[str, ...]  # fragments saying what was wrong / expected
    at: str | None = None  # text of the offending line (None: no line applies)
    key: str | None = None  # dotted key path reported right after file:line
    target: str = "local"
    absent: tuple[str, ...] = field(default=())  # fragments that must not appear

    @property
    def file(self) -> Path:
        root = DATA / self.case
        return {"pipeline": root / "pipelines" / "orders.yml", "project": root / "pipelines" / "orders.yml",
                "target": root / "kappalake.yml", "file": root}[self.how]

    def load(self) -> object:
        root = DATA / self.case
        loaders: dict[str, Callable[[], object]] = {
            "pipeline": lambda: load_pipeline("orders", root, self.target, env=ENV),
            "project": lambda: load_project(root, self.target, env=ENV),
            "target": lambda: load_target(root, self.target, env=ENV),
            "file": lambda: load_pipeline_file(root, self.target, env=ENV),
        }
        return loaders[self.how]()


CASES = [
    # ---------------------------------------------------------------- pipeline files
    Bad("unknown_key", "pipeline", ("unknown key", "check the spelling"),
        at="watermak: 10 seconds", key="silver.watermak"),
    Bad("wrong_type", "pipeline", ("Input should be a valid integer", "(got 'three')"),
        at="partitions: three", key="source.partitions"),
    Bad("missing_required", "pipeline", ("Field required",),
        at="events:", key="events.time"),
    Bad("invalid_duration", "pipeline",
        ("expected a duration such as '10 seconds', '5 minutes', '1 hour' or '500 ms'", "got '10 minuts'"),
        at="watermark: 10 minuts", key="silver.watermark", absent=("(got '10 minuts')",)),
    Bad("sliding_without_slide", "pipeline", ("a sliding window needs slide",),
        at="window: {kind: sliding", key="gold.views.spend_5m.window"),
    Bad("session_with_size", "pipeline", ("a session window takes gap, not size",),
        at="window:", key="gold.views.sessions.window"),
    Bad("metric_without_column", "pipeline", ("metric fn 'sum' needs column",),
        at="spend: {fn: sum}", key="gold.views.spend_1m.metrics.spend"),
    Bad("group_by_not_in_schema", "pipeline", ("'customr' is not declared in events.schema",),
        at="group_by: [customr]", key="gold.views.spend_1m.group_by", absent=("(top level)",)),
    Bad("event_time_not_timestamp", "pipeline", ("field 'created_at' must have type timestamp, not 'string'",),
        at="time: created_at", key="events.time"),
    Bad("unknown_field_type", "pipeline", ("unknown type 'dbl'", "'timestamp'", "or decimal(p,s)"),
        at="amount: dbl", key="events.schema.amount.type", absent=("(got 'dbl')",)),
    Bad("unknown_source_option", "pipeline",
        ("unknown Kafka source option 'maxOffsetPerTrigger'", "maxOffsetsPerTrigger", "or a 'kafka.*' client setting"),
        at="options:", key="source.options"),
    Bad("forbidden_bootstrap_option", "pipeline",
        ("option 'kafka.bootstrap.servers' is not set here", "brokers from the target's kafka.bootstrap_servers"),
        at="options:", key="source.options"),
    Bad("literal_jaas_secret", "pipeline",
        ("looks like a secret written into the file", "reference an environment variable instead",
         "${KAFKA_SASL_JAAS_CONFIG}"),
        at="kafka.sasl.jaas.config:", key="source.options.kafka.sasl.jaas.config", absent=("hunter2",)),
    Bad("upsert_without_merge_key", "pipeline", ("mode 'upsert' needs merge_key and sequence_column",),
        at="silver:", key="silver"),
    Bad("unknown_overlay_target", "pipeline", ("unknown target", "expected one of local, databricks, k8s"),
        at="databrick:", key="targets.databrick"),
    Bad("overlay_invalid_value", "pipeline", ("expected a duration such as", "got 'soon'"),
        at="watermark: soon", key="silver.watermark", target="databricks"),
    Bad("overlay_target_not_in_project", "project", ("unknown target", "expected one of local, staging"),
        at="databricks:", key="targets.databricks"),
    # ---------------------------------------------------------------- project files
    Bad("literal_dsn_secret", "target",
        ("looks like a secret written into the file", "reference an environment variable instead"),
        at="dsn:", key="targets.local.clickhouse.dsn", absent=("hunter2",)),
    Bad("unknown_target", "target", ("no target named 'prod'", "defined: local"),
        at="targets:", key="targets", target="prod"),
    Bad("project_unknown_key", "target", ("unknown key", "targets.local.storage: Field required"),
        at="storge:", key="targets.local.storge"),
    Bad("project_wrong_type", "target",
        ("Input should be 'resolve' or 'provided'", "(got 'download')",
         "targets.local.spark.shuffle_partitions: Input should be greater than or equal to 1 (got 0)"),
        at="jars: download", key="targets.local.spark.jars"),
    Bad("project_no_targets", "target", ("expected a mapping with at least one target",), key="targets"),
    # ---------------------------------------------------------------- single files
    Bad("empty.yml", "file", ("file is empty", "expected a mapping of settings")),
    Bad("comments_only.yml", "file", ("file is empty", "expected a mapping of settings")),
    Bad("top_level_list.yml", "file", ("expected a mapping at the top level, got list",)),
    Bad("invalid_yaml_indent.yml", "file", ("invalid YAML", "mapping values are not allowed here"),
        at="partitions: 3"),
    Bad("invalid_yaml_unclosed.yml", "file", ("invalid YAML", "expected ',' or '}'"),
        at="events:"),
    Bad("name_mismatch.yml", "file", ("'orders' must match the file name 'name_mismatch'",),
        at="name: orders", key="name"),
]


def _line(path: Path, text: str) -> int:
    """1-based number of the one line of ``path`` containing ``text``."""
    hits = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text in line]
    assert len(hits) == 1, f"{text!r} must occur on exactly one line of {path}, found {hits}"
    return hits[0]


@pytest.mark.parametrize("bad", [pytest.param(c, id=c.case) for c in CASES])
def test_bad_config_names_file_line_key_and_expectation(bad: Bad) -> None:
    path = bad.file
    assert path.is_file(), f"missing test input {path}"
    with pytest.raises(ConfigError) as info:
        bad.load()
    message = str(info.value)

    where = f"{path}:{_line(path, bad.at)}" if bad.at else str(path)
    head = f"{where}: {bad.key}: " if bad.key else f"{where}: "
    assert head in message, f"expected {head!r} in:\n{message}"
    if bad.at is None:
        assert not re.search(re.escape(str(path)) + r":\d", message), message
    for fragment in bad.expected:
        assert fragment in message, f"expected {fragment!r} in:\n{message}"
    for fragment in bad.absent:
        assert fragment not in message, f"did not expect {fragment!r} in:\n{message}"


def test_every_bad_input_on_disk_has_a_case() -> None:
    on_disk = {p.name for p in DATA.iterdir()}
    assert on_disk == {c.case for c in CASES}


def test_at_least_twelve_distinct_bad_inputs() -> None:
    assert len({c.file for c in CASES}) >= 12


def test_config_error_is_a_kappalake_error_with_exit_code_2() -> None:
    with pytest.raises(ConfigError) as info:
        load_pipeline_file(DATA / "empty.yml", "local", env=ENV)
    assert isinstance(info.value, KappalakeError)
    assert info.value.exit_code == 2


def test_missing_file() -> None:
    path = DATA / "no_such_pipeline.yml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: file not found")):
        load_pipeline_file(path, "local", env=ENV)


def test_missing_project_file() -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{DATA / 'empty.yml' / 'kappalake.yml'}: ")):
        load_target(DATA / "empty.yml", "local", env=ENV)


def test_unknown_pipeline_name_lists_the_defined_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_pipeline("payment", CONF, "local", env=ENV)
    message = str(info.value)
    assert "no pipeline named 'payment'" in message
    assert str(CONF / "pipelines") in message
    assert "(defined: iot, merchants, orders, payments, payments_avro, payments_enriched, payments_protobuf)" in message


def test_missing_pipelines_folder() -> None:
    with pytest.raises(ConfigError) as info:
        load_pipeline("orders", DATA / "unknown_target", "local", env=ENV)
    assert f"{DATA / 'unknown_target' / 'pipelines'}: pipelines folder not found" in str(info.value)


def test_pipeline_file_for_unknown_target() -> None:
    path = CONF / "pipelines" / "payments.yml"
    with pytest.raises(ConfigError) as info:
        load_pipeline_file(path, "prod", env=ENV)
    message = str(info.value)
    assert f"{path}: " in message
    assert "no target named 'prod'" in message
    assert "defined: local, cluster, databricks, k8s" in message

