"""Expectations in the pipeline YAML: where they may be declared, what is checked at load and at query start,
and which apply to a backfill."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kappalake.config.loader import load_pipeline, load_target
from kappalake.errors import ConfigError
from kappalake.pipelines.quality_gate import check_expressions, effective, results_path
from kappalake.quality.config import QualityConfig
from kappalake.quality.rows import silver_view
from kappalake.runtime.context import RunContext
from kappalake.runtime.paths import HomeLayout
from kappalake.transforms.parse import parse_events

CONF = Path(__file__).resolve().parents[2] / "conf"
ENV = {"KAPPALAKE_HOME": "/tmp/kappalake-quality-wiring"}
SILVER_ANCHOR = "    key_env: KAPPALAKE_PII_KEY\n"
VIEW_ANCHOR = "      clickhouse: {table: payments_card_velocity_1m}\n"


def conf_with(tmp_path: Path, anchor: str, block: str) -> Path:
    """A copy of conf/ whose payments pipeline has ``block`` inserted after ``anchor``."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    path = conf / "pipelines" / "payments.yml"
    text = path.read_text()
    assert anchor in text
    path.write_text(text.replace(anchor, anchor + block, 1))
    return conf


def test_silver_and_gold_expectations_load(tmp_path: Path) -> None:
    conf = conf_with(tmp_path, SILVER_ANCHOR, "  expectations:\n"
                     "    - {name: cap, kind: between, column: amount, max: 500}\n"
                     "    - {name: lineage, kind: not_null, column: source_offset}\n")
    pipeline = load_pipeline("payments", conf, "local", env=ENV)
    assert [e.name for e in pipeline.silver.expectations.row_level] == ["cap", "lineage"]
    conf = conf_with(tmp_path / "g", VIEW_ANCHOR, "      expectations:\n"
                     "        - {name: sums, kind: between, column: amount_sum, max: 500, on_fail: record}\n"
                     "        - {name: windows, kind: row_count, min: 1, on_fail: stop}\n")
    view = load_pipeline("payments", conf, "local", env=ENV).gold.views["card_velocity_1m"]
    assert [(e.name, e.level, e.on_fail) for e in view.expectations.expectations] == [
        ("sums", "row", "record"), ("windows", "batch", "stop")]


@pytest.mark.parametrize(("anchor", "block", "fragments"), [
    (SILVER_ANCHOR, "  expectations:\n    - {name: cap, kind: between, column: amont, max: 500}\n",
     ("silver.expectations", "'cap'", "'amont'", "columns: event_id")),
    (VIEW_ANCHOR, "      expectations:\n        - {name: sums, kind: between, column: amount, max: 5}\n",
     ("gold.views.card_velocity_1m", "'sums'", "would quarantine window rows", "on_fail: record")),
    (VIEW_ANCHOR, "      expectations:\n        - {name: sums, kind: not_null, column: amount, on_fail: record}\n",
     ("gold.views.card_velocity_1m.expectations", "'amount'", "amount_sum")),
    (SILVER_ANCHOR, "  expectations:\n    - {name: fresh, kind: freshness, column: event_time, max_lag: soon}\n",
     ("silver.expectations", "max_lag", "expected a duration")),
])
def test_bad_expectations_name_the_file_and_the_rule(tmp_path: Path, anchor: str, block: str,
                                                     fragments: tuple[str, ...]) -> None:
    conf = conf_with(tmp_path, anchor, block)
    with pytest.raises(ConfigError) as info:
        load_pipeline("payments", conf, "local", env=ENV)
    message = str(info.value)
    assert str(conf / "pipelines" / "payments.yml") in message
    for fragment in fragments:
        assert fragment in message, message


def _context(tmp_path: Path, rules: list[dict], run: str = "live") -> RunContext:
    pipeline = load_pipeline("payments", CONF, "local", env=ENV)
    silver = pipeline.silver.model_copy(update={"expectations": QualityConfig.model_validate(rules)})
    target = load_target(CONF, "local", env={"KAPPALAKE_HOME": str(tmp_path)})
    return RunContext(pipeline.model_copy(update={"silver": silver}), target,
                      HomeLayout(tmp_path, tmp_path / "cache"), run=run)


RULES = [{"name": "fresh", "kind": "freshness", "column": "event_time", "max_lag": "5 minutes"},
         {"name": "rows", "kind": "row_count", "min": 1}]


def test_a_backfill_leaves_freshness_out(tmp_path: Path) -> None:
    live = _context(tmp_path, RULES)
    assert [e.name for e in effective(live.pipeline.silver.expectations, live).expectations] == ["fresh", "rows"]
    replay = _context(tmp_path, RULES, run="backfill-1")
    assert [e.name for e in effective(replay.pipeline.silver.expectations, replay).expectations] == ["rows"]
    assert results_path(replay.pipeline.silver.expectations, replay) == f"{tmp_path}/lake/payments/quality_results"


@pytest.mark.parametrize(("rule", "fragment"), [
    ({"name": "typo", "kind": "sql", "expression": "amout < 5"}, "amout"),
    ({"name": "broken", "kind": "sql", "expression": "amount <<< 5"}, "broken"),
])
def test_a_bad_sql_expression_fails_at_query_start(spark, tmp_path: Path, rule: dict, fragment: str) -> None:
    ctx = _context(tmp_path, [rule])
    records = spark.createDataFrame([], "key binary, value binary, topic string, partition int, offset long, "
                                        "kafka_timestamp timestamp")
    view = silver_view(parse_events(records, ctx.pipeline.events), ctx.pipeline.events)
    with pytest.raises(ConfigError) as info:
        check_expressions(view, ctx.pipeline.silver.expectations, "payments silver.expectations")
    message = str(info.value)
    assert f"expectation {rule['name']!r}" in message and fragment in message and "amount" in message


def test_valid_checks_pass_the_start_check(spark, tmp_path: Path) -> None:
    rules = [{"name": "ok", "kind": "sql", "expression": "amount < 5 and country <> 'BR'"},
             {"name": "once", "kind": "unique", "column": "event_id"}, *RULES]
    ctx = _context(tmp_path, rules)
    records = spark.createDataFrame([], "key binary, value binary, topic string, partition int, offset long, "
                                        "kafka_timestamp timestamp")
    view = silver_view(parse_events(records, ctx.pipeline.events), ctx.pipeline.events)
    check_expressions(view, ctx.pipeline.silver.expectations, "payments silver.expectations")
