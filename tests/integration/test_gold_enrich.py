"""Gold view enrichment against the real broker, Spark, Delta and ClickHouse: a view grouped by a dimension
column (a merchants Delta table at the silver path of pipeline ``merchants``) equals a pandas computation
over the produced events joined with the dimension; a change to the dimension while the job runs applies to
the windows of later events without restarting the job."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from kappalake.config.models import GoldViewConfig
from kappalake.errors import ConfigError
from kappalake.generator import GeneratorOptions
from kappalake.io.delta.stream import Trigger
from kappalake.pipelines.produce import produce
from kappalake.pipelines.runner import run_pipeline
from kappalake.runtime.context import RunContext
from tests.integration.gold_reference import as_naive_utc, expected_view, unique_events
from tests.integration.kafka_helpers import consume_all

START = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
KEY = "test-pii-key"
CATEGORIES = ("food", "travel", "books")
VIEW = {
    "enrich": [{"pipeline": "merchants", "key": "merchant_id", "columns": ["category", "risk_tier"]}],
    "window": {"kind": "tumbling", "size": "1 minute"},
    "group_by": ["category"],
    "metrics": {"txn_count": {"fn": "count"}, "amount_sum": {"fn": "sum", "column": "amount"},
                "risk_max": {"fn": "max", "column": "risk_tier"}},
}


@pytest.fixture(autouse=True)
def pii_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAPPALAKE_PII_KEY", KEY)


def enriched_context(make_context, topic: str) -> RunContext:
    """Payments with one enriched view (the shipped views left out: this test is about the join)."""
    ctx = make_context("payments", topic)
    view = GoldViewConfig.model_validate({**VIEW, "clickhouse": {"table": f"merchant_category_{topic.replace('-', '_')}"}})
    gold = ctx.pipeline.gold.model_copy(update={"views": {"merchant_category_1m": view}})
    return replace(ctx, pipeline=ctx.pipeline.model_copy(update={"gold": gold}))


def merchants() -> pd.DataFrame:
    """The generator's merchants m-00000..m-00299, less the last ten (events of those find no row)."""
    rows = [{"merchant_id": f"m-{i:05d}", "name": f"Merchant {i}", "category": CATEGORIES[i % 3],
             "country": "GB", "risk_tier": i % 5, "updated_at": START, "cdc_op": "r", "cdc_lsn": i,
             "cdc_ts": START, "cdc_deleted": False} for i in range(290)]
    return pd.DataFrame(rows)


def dimension_as_seen(frame: pd.DataFrame, dim: pd.DataFrame) -> pd.DataFrame:
    """Events joined with the dimension as gold does: left join, deleted rows left out, group key '' on a miss."""
    live = dim[~dim.cdc_deleted][["merchant_id", "category", "risk_tier"]]
    joined = frame.merge(live, on="merchant_id", how="left")
    return joined.assign(category=joined.category.fillna(""))


def total(clickhouse, table: str) -> int:
    """Events counted in the view so far (0 before the job created its table)."""
    if not int(clickhouse.rows(f"EXISTS TABLE `{table}`")[0][0]):
        return 0
    return int(clickhouse.rows(f"SELECT sum(txn_count) FROM `{table}` FINAL")[0][0] or 0)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def test_enriched_view_follows_the_dimension_table_while_the_job_runs(spark, make_context, topic_name, bootstrap,
                                                                      clickhouse) -> None:
    ctx = enriched_context(make_context, topic_name)
    view = ctx.pipeline.gold.views["merchant_category_1m"]
    table = view.clickhouse.table
    path = replace(ctx, pipeline=ctx.pipeline.model_copy(update={"name": "merchants"})).table_path("silver")
    assert path == f"{ctx.target.storage.root}/merchants/silver"

    produce(ctx, events=600, options=GeneratorOptions(seed=11, duplicate_fraction=0.05, malformed_fraction=0.02),
            start_time=START, events_per_second=20.0)
    first = [value for _, _, _, value in consume_all(bootstrap, topic_name)]

    # No dimension table yet: the job refuses to start, naming the table and what to run first.
    with pytest.raises(ConfigError) as info:
        run_pipeline(ctx, ["gold"], Trigger(available_now=True), spark=spark)
    assert path in str(info.value) and "run that pipeline first" in str(info.value)

    before = merchants()
    spark.createDataFrame(before).write.format("delta").save(path)

    stop = threading.Event()
    results: list = []
    runner = threading.Thread(target=lambda: results.append(run_pipeline(
        ctx, ["gold"], Trigger(interval="1 second"), spark=spark, timeout=400, until=lambda _: stop.is_set())))
    runner.start()
    try:
        expected_first = len(unique_events([first], ctx.pipeline, KEY))
        wait_for(lambda: total(clickhouse, table) == expected_first, 180, "the first round in ClickHouse")

        # The dimension changes while the job runs: travel merchants become gaming, every tenth is deleted.
        spark.sql(f"UPDATE delta.`{path}` SET category = 'gaming', cdc_op = 'u' WHERE category = 'travel'")
        spark.sql(f"UPDATE delta.`{path}` SET cdc_deleted = true, cdc_op = 'd' "
                  "WHERE cast(substr(merchant_id, 3) AS int) % 10 = 0")
        after = spark.read.format("delta").load(path).toPandas()

        produce(ctx, events=600, options=GeneratorOptions(seed=12, duplicate_fraction=0.05),
                start_time=START + timedelta(minutes=5), events_per_second=20.0)
        seen = {value for value in first}
        second = [value for _, _, _, value in consume_all(bootstrap, topic_name) if value not in seen]
        expected_all = len(unique_events([first, second], ctx.pipeline, KEY))
        wait_for(lambda: total(clickhouse, table) == expected_all, 180, "the second round in ClickHouse")
    finally:
        stop.set()
        runner.join(timeout=120)
    # One run throughout: the first round was in ClickHouse before the change, the second after it.
    assert results and not runner.is_alive(), "the live run did not return"

    events = unique_events([first, second], ctx.pipeline, KEY)
    joined = pd.concat([dimension_as_seen(events[events._round == 0], before),
                        dimension_as_seen(events[events._round == 1], after)], ignore_index=True)
    expected, late = expected_view(joined, ctx.pipeline, view)
    assert late.empty
    actual = clickhouse.query_arrow(f"SELECT * FROM `{table}` FINAL").to_pandas()
    keys = ["category", "window_start"]
    for frame in (expected, actual):
        frame["window_start"] = frame.window_start.map(as_naive_utc)
    merged = expected.merge(actual, on=keys, suffixes=("_exp", "_act"), how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"][keys]
    assert (merged.txn_count_exp.astype("int64") == merged.txn_count_act.astype("int64")).all()
    assert ((merged.amount_sum_exp.astype(float) - merged.amount_sum_act.astype(float)).abs() < 0.01).all()
    assert (merged.risk_max_exp.fillna(-1).astype("int64") == merged.risk_max_act.fillna(-1).astype("int64")).all()

    # Before the change: travel, no gaming; after it: gaming, no travel; misses and deletions under ''.
    early = set(actual[actual.window_start < as_naive_utc(START + timedelta(minutes=5))].category)
    later = set(actual[actual.window_start >= as_naive_utc(START + timedelta(minutes=5))].category)
    assert {"food", "travel", "books"} <= early and "gaming" not in early
    assert {"food", "gaming", "books", ""} <= later and "travel" not in later
