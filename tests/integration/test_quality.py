"""Data quality in the real pipeline: expectations declared on silver and on a gold view, run by the silver
and gold queries against the real broker, Spark, Delta and chDB.

Checked: quarantined rows leave silver and land in the dead-letter table with the failed expectation
names; results land in the results table and ``kappalake quality`` shows them; ``on_fail: stop`` fails the
query before anything of the batch is written and the same checkpoint replays the batch after the fix;
gold view expectations are recorded without dropping windows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from deltalake import DeltaTable

from kappalake.generator import GeneratorOptions
from kappalake.io.delta.stream import Trigger
from kappalake.pipelines.produce import produce
from kappalake.pipelines.quality_gate import RESULTS_TABLE
from kappalake.pipelines.runner import run_pipeline
from kappalake.quality.batch import QualityStop
from kappalake.quality.config import QualityConfig
from kappalake.quality.results import read_last_results
from kappalake.runtime.context import RunContext
from tests.integration.kafka_helpers import consume_all

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
NOW = Trigger(available_now=True)
AMOUNT_CAP = 250
SILVER_RULES = [
    {"name": "amount_cap", "kind": "between", "column": "amount", "max": AMOUNT_CAP},          # quarantine
    {"name": "not_brazil", "kind": "sql", "expression": "country <> 'BR'", "on_fail": "record"},  # record only
    {"name": "ids_unique", "kind": "unique", "column": "event_id"},                              # batch, record
    {"name": "some_rows", "kind": "row_count", "min": 1},                                        # batch, record
    {"name": "fresh", "kind": "freshness", "column": "event_time", "max_lag": "1 hour"},        # old data: fails
]


@pytest.fixture(autouse=True)
def pii_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAPPALAKE_PII_KEY", "quality-test-key")


def rows(path: str) -> list[dict]:
    return DeltaTable(path).to_pyarrow_table().to_pylist()


def with_silver_rules(ctx: RunContext, rules: list[dict]) -> RunContext:
    silver = ctx.pipeline.silver.model_copy(update={"expectations": QualityConfig.model_validate(rules)})
    return RunContext(ctx.pipeline.model_copy(update={"silver": silver}), ctx.target, ctx.layout)


def unique_valid(bootstrap: str, topic: str) -> dict[str, tuple[dict, bytes]]:
    """Unique parseable payments by event id, with their Kafka value, from the topic alone."""
    unique: dict[str, tuple[dict, bytes]] = {}
    for _, _, _, value in consume_all(bootstrap, topic):
        try:
            payload = json.loads(value)
        except ValueError:
            continue
        if {"event_id", "event_time", "card_id"} <= payload.keys() and isinstance(payload.get("amount"),
                                                                                  (int, float)):
            unique.setdefault(payload["event_id"], (payload, value))
    return unique


@pytest.mark.slow
def test_silver_quarantines_records_and_reports(spark, make_context, topic_name, bootstrap, tmp_path) -> None:
    ctx = with_silver_rules(make_context("payments", topic_name), SILVER_RULES)
    options = GeneratorOptions(seed=21, malformed_fraction=0.04, duplicate_fraction=0.05)
    summary = produce(ctx, events=1500, options=options, start_time=START)

    run_pipeline(ctx, ["silver"], NOW, spark=spark)

    valid = unique_valid(bootstrap, topic_name)
    over_cap = {i for i, (p, _) in valid.items() if Decimal(str(p["amount"])) > AMOUNT_CAP}
    brazil = {i for i, (p, _) in valid.items() if p["country"] == "BR"}
    assert over_cap and brazil, "the generator should give some amounts over the cap and some BR payments"
    silver = {r["event_id"] for r in rows(ctx.table_path("silver"))}
    assert silver == set(valid) - over_cap  # 'record' kept the BR payments, 'quarantine' removed the big ones

    dead = rows(ctx.table_path("dead_letter"))
    quarantined = [d for d in dead if d["error_class"] == "quality"]
    assert len(dead) == summary.by_kind["malformed"] + len(over_cap)
    assert {json.loads(d["value"])["event_id"] for d in quarantined} == over_cap
    for d in quarantined:  # every expectation the row failed is named, the quarantining one first
        event_id = json.loads(d["value"])["event_id"]
        also = ["quality:not_brazil"] if event_id in brazil else []
        assert d["failed_rules"] == ["quality:amount_cap", *also]
        assert d["error_message"].startswith(f"expectation amount_cap failed: amount <= {AMOUNT_CAP}")
        assert d["value"] == valid[event_id][1]  # the original Kafka bytes

    results = read_last_results(ctx.table_path(RESULTS_TABLE), limit=1000)
    by_name: dict[str, list[dict]] = {}
    for r in results:
        by_name.setdefault(r["expectation"], []).append(r)
    assert set(by_name) == {rule["name"] for rule in SILVER_RULES}
    assert {r["table"] for r in results} == {"silver"}
    unexpected = sum(int(r["observed_value"].split(" of ")[0]) for r in by_name["amount_cap"])
    assert unexpected == len(over_cap) and not all(r["success"] for r in by_name["amount_cap"])
    assert sum(int(r["observed_value"].split(" of ")[0]) for r in by_name["not_brazil"]) == len(brazil)
    assert all(r["success"] for r in by_name["ids_unique"] + by_name["some_rows"])
    assert all(not r["success"] and r["observed_value"].startswith("lag ") for r in by_name["fresh"])

    record = json.loads((ctx.runs_dir / "silver" / "last-run.json").read_text())
    assert record["quarantined_rows"] == len(over_cap)
    assert record["dead_letter_rows"] == len(dead)
    assert record["quality_failures"] == sum(not r["success"] for r in results)

    shown = subprocess.run([sys.executable, "-m", "kappalake.cli.app", "--conf", str(REPO / "conf"), "--target",
                            "local", "quality", "payments", "--failed"], capture_output=True, text=True, timeout=120,
                           env=cli_env(ctx, tmp_path), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "amount_cap" in shown.stdout and "FAIL" in shown.stdout and "some_rows" not in shown.stdout


def cli_env(ctx: RunContext, tmp_path: Path) -> dict[str, str]:
    """Environment for a CLI subprocess reading this test's tables: the local target's storage root is
    ``$KAPPALAKE_HOME/lake``, which is where ``make_context`` put them."""
    assert ctx.target.storage.root == str(tmp_path / "lake")
    env = {**os.environ, "KAPPALAKE_HOME": str(tmp_path), "PYTHONPATH": str(REPO / "src"), "COLUMNS": "250"}
    env.pop("KAPPALAKE_CONF", None)
    return env


@pytest.mark.slow
def test_stop_blocks_the_write_and_the_fixed_rule_replays_the_batch(spark, make_context, topic_name) -> None:
    base = make_context("payments", topic_name)
    produce(base, events=400, options=GeneratorOptions(seed=5), start_time=START)
    strict = with_silver_rules(base, [{"name": "small_batches", "kind": "row_count", "max": 10,
                                       "on_fail": "stop"}])

    with pytest.raises(QualityStop) as stopped:
        run_pipeline(strict, ["silver"], NOW, spark=spark)
    message = str(stopped.value)
    assert "small_batches" in message and "batch 0" in message and "replays this batch" in message
    assert QualityStop.exit_code == 8
    assert not DeltaTable.is_deltatable(base.table_path("silver"))  # nothing of the batch was written
    failed = read_last_results(base.table_path(RESULTS_TABLE), failed_only=True)
    assert [(r["expectation"], r["batch_id"]) for r in failed] == [("small_batches", 0)]

    fixed = with_silver_rules(base, [{"name": "small_batches", "kind": "row_count", "max": 100_000,
                                      "on_fail": "stop"}])
    run_pipeline(fixed, ["silver"], NOW, spark=spark)  # same checkpoint: batch 0 runs again
    assert len(rows(base.table_path("silver"))) == 400
    latest = read_last_results(base.table_path(RESULTS_TABLE), limit=10)
    assert [(r["batch_id"], r["success"]) for r in latest if r["batch_id"] == 0] == [(0, True), (0, False)]


@pytest.mark.slow
def test_gold_view_expectations_record_without_dropping_windows(spark, make_context, topic_name,
                                                                clickhouse) -> None:
    base = make_context("payments", topic_name)
    name = "card_velocity_1m"
    view = base.pipeline.gold.views[name].model_copy(update={"expectations": QualityConfig.model_validate([
        {"name": "small_sums", "kind": "between", "column": "amount_sum", "max": AMOUNT_CAP, "on_fail": "record"},
        {"name": "windows_written", "kind": "row_count", "min": 1},
    ])})
    gold = base.pipeline.gold.model_copy(update={"views": {name: view}})
    ctx = RunContext(base.pipeline.model_copy(update={"gold": gold}), base.target, base.layout)
    produce(ctx, events=600, options=GeneratorOptions(seed=8), start_time=START)

    run_pipeline(ctx, ["gold"], NOW, spark=spark)

    table = view.clickhouse.table
    written = clickhouse.query_arrow(f"SELECT amount_sum FROM `{table}` FINAL").to_pandas()
    results = [r for r in read_last_results(ctx.table_path(RESULTS_TABLE), limit=1000)
               if r["table"] == f"gold.{name}"]
    assert {r["expectation"] for r in results} == {"small_sums", "windows_written"}
    # Every window update was validated (some windows are updated by several batches) and none was dropped.
    over = [r for r in results if r["expectation"] == "small_sums"]
    flagged = sum(int(r["observed_value"].split(" of ")[0]) for r in over)
    assert len(written) > 0 and (written["amount_sum"] > AMOUNT_CAP).sum() <= flagged
    assert (written["amount_sum"] > AMOUNT_CAP).any()
    assert all(r["success"] for r in results if r["expectation"] == "windows_written")
