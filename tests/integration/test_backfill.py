"""Backfills against the real broker, Spark, Delta and chDB: idempotent replays, gold rewrites, resume,
clear errors for impossible ranges, start positions refused on an existing checkpoint."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable

from kappalake.errors import KappalakeError
from kappalake.generator import GeneratorOptions
from kappalake.io.delta.stream import Trigger
from kappalake.pipelines.backfill import backfill_context, plan_backfill, run_backfill, save_plan
from kappalake.pipelines.produce import produce
from kappalake.pipelines.runner import run_pipeline

KEY = "test-pii-key"
NOW = Trigger(available_now=True)
FAULTS = GeneratorOptions(seed=21, duplicate_fraction=0.05, malformed_fraction=0.03)


@pytest.fixture(autouse=True)
def pii_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAPPALAKE_PII_KEY", KEY)


def count(path: str) -> int:
    return DeltaTable(path).to_pyarrow_table().num_rows


def ids(path: str, column: str) -> list:
    return DeltaTable(path).to_pyarrow_table(columns=[column]).column(column).to_pylist()


def test_bronze_and_silver_backfills_over_live_data_add_no_duplicates(spark, make_context, topic_name) -> None:
    ctx = make_context("payments", topic_name)
    produce(ctx, events=2000, options=FAULTS, start_time=datetime(2026, 11, 1, tzinfo=timezone.utc))
    run_pipeline(ctx, ["bronze", "silver"], NOW, spark=spark)
    bronze, silver, dead = (count(ctx.table_path(t)) for t in ("bronze", "silver", "dead_letter"))
    assert bronze == 2000 and 0 < dead < silver < bronze

    for layer in ("bronze", "silver"):
        plan = plan_backfill(ctx, layer, from_earliest=True)
        summary = run_backfill(ctx, plan, spark=spark)
        assert summary.records_read == 2000
        assert all(rows == 0 for rows in summary.rows_written.values()), summary.rows_written
    assert (count(ctx.table_path("bronze")), count(ctx.table_path("silver")),
            count(ctx.table_path("dead_letter"))) == (bronze, silver, dead)

    # New records arrive; a backfill over everything adds exactly the new ones, once.
    produce(ctx, events=500, options=GeneratorOptions(seed=22, malformed_fraction=0.1),
            start_time=datetime(2026, 11, 2, tzinfo=timezone.utc))
    plan = plan_backfill(ctx, "silver", from_earliest=True, name="after-new-data")
    summary = run_backfill(ctx, plan, spark=spark)
    event_ids = ids(ctx.table_path("silver"), "event_id")
    assert len(event_ids) == len(set(event_ids)) == silver + summary.rows_written["silver"]
    assert summary.rows_written["silver"] + summary.rows_written["dead_letter"] == 500
    offsets = ids(ctx.table_path("dead_letter"), "source_offset")
    assert len(offsets) == dead + summary.rows_written["dead_letter"]


def test_gold_backfill_after_wiping_gold_equals_the_live_result(spark, make_context, topic_name, clickhouse) -> None:
    ctx = make_context("payments", topic_name)
    since = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    produce(ctx, events=2000, options=FAULTS, start_time=since + timedelta(minutes=1), events_per_second=20.0)
    run_pipeline(ctx, ["gold"], NOW, spark=spark)
    tables = [view.clickhouse.table for view in ctx.pipeline.gold.views.values()]

    def final(table: str) -> pd.DataFrame:
        frame = clickhouse.query_arrow(f"SELECT * EXCEPT (version, updated_at) FROM `{table}` FINAL").to_pandas()
        return frame.sort_values(list(frame.columns[:2])).reset_index(drop=True)

    live = {table: final(table) for table in tables}
    assert all(len(rows) > 100 for rows in live.values())
    live_versions = {t: clickhouse.rows(f"SELECT max(version) FROM `{t}`")[0][0] for t in tables}
    for table in tables:
        clickhouse.command(f"TRUNCATE TABLE `{table}`")

    arguments = {"from_timestamp": since}
    summary = run_backfill(ctx, plan_backfill(ctx, "gold", **arguments), spark=spark)
    assert summary.records_read == 2000
    # A backfill from T rewrites the windows starting at or after T (one starting earlier could hold
    # events from before T that the backfill does not read).
    live = {table: rows[rows.window_start >= pd.Timestamp(since)].reset_index(drop=True)
            for table, rows in live.items()}
    for table in tables:
        pd.testing.assert_frame_equal(final(table), live[table])
        assert clickhouse.rows(f"SELECT min(version) FROM `{table}`")[0][0] > live_versions[table]

    # A backfill over a live table supersedes it (newer versions), the values stay the same; and a later
    # live write supersedes the backfill where it is newer.
    summary = run_backfill(ctx, plan_backfill(ctx, "gold", name="again", **arguments), spark=spark)
    for table in tables:
        pd.testing.assert_frame_equal(final(table), live[table])
    produce(ctx, events=300, options=GeneratorOptions(seed=23), start_time=since + timedelta(minutes=3),
            events_per_second=20.0)
    run_pipeline(ctx, ["gold"], NOW, spark=spark)
    table = ctx.pipeline.gold.views["card_velocity_1m"].clickhouse.table
    after = final(table)
    assert after.txn_count.sum() > live[table].txn_count.sum()


def test_interrupted_backfill_resumes_to_the_same_result(spark, make_context, topic_name) -> None:
    ctx = make_context("payments", topic_name)
    produce(ctx, events=3000, options=FAULTS, start_time=datetime(2026, 11, 1, tzinfo=timezone.utc))
    plan = plan_backfill(ctx, "silver", from_earliest=True, name="resumable", max_offsets_per_trigger=400)
    save_plan(ctx, plan)

    class Interrupt(Exception):
        pass

    def interrupt(tracker) -> None:
        totals = tracker.totals.get(f"{ctx.pipeline.name}.silver")
        if totals is not None and totals.input_rows > 0:
            raise Interrupt()

    with pytest.raises(Exception):
        run_pipeline(backfill_context(ctx, plan), ["silver"], NOW, spark=spark, on_progress=interrupt)
    partial = count(ctx.table_path("silver"))
    assert 0 < partial

    resumed = plan_backfill(ctx, "silver", from_earliest=True, name="resumable", max_offsets_per_trigger=400)
    assert resumed == plan
    run_backfill(ctx, resumed, spark=spark)

    storage = ctx.target.storage.model_copy(update={"root": ctx.target.storage.root + "-reference"})
    fresh = replace(ctx, target=ctx.target.model_copy(update={"storage": storage}))  # the reference: a live run
    run_pipeline(fresh, ["silver"], NOW, spark=spark)
    assert sorted(ids(ctx.table_path("silver"), "event_id")) == sorted(ids(fresh.table_path("silver"), "event_id"))
    assert count(ctx.table_path("dead_letter")) == count(fresh.table_path("dead_letter"))


def test_impossible_ranges_get_clear_messages(spark, make_context, topic_name, bootstrap) -> None:
    ctx = make_context("payments", topic_name, partitions=1)
    before = datetime.now(timezone.utc) - timedelta(minutes=5)
    produce(ctx, events=300, options=GeneratorOptions(seed=24))
    with pytest.raises(KappalakeError, match="is after the last record"):
        plan_backfill(ctx, "bronze", from_timestamp=datetime.now(timezone.utc) + timedelta(hours=1))
    with pytest.raises(KappalakeError, match="outside the partition"):
        plan_backfill(ctx, "bronze", from_earliest=True, to_offsets={topic_name: {0: 10_000}})
    with pytest.raises(KappalakeError, match="partition 7"):
        plan_backfill(ctx, "bronze", from_offsets={topic_name: {7: 0}})

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(topic_name, 0, 100)]).values():
        future.result(timeout=30)
    with pytest.raises(KappalakeError, match="before the retention") as error:
        plan_backfill(ctx, "bronze", from_timestamp=before)
    assert f"{topic_name}/0" in str(error.value) and "offsets before 100 were deleted" in str(error.value)
    with pytest.raises(KappalakeError, match="deleted by retention"):
        plan_backfill(ctx, "bronze", from_offsets={topic_name: {0: 5}})
    assert plan_backfill(ctx, "bronze", from_earliest=True).records == 200


def test_start_position_is_refused_on_an_existing_checkpoint(spark, make_context, topic_name) -> None:
    ctx = make_context("payments", topic_name)
    produce(ctx, events=300, options=GeneratorOptions(seed=25))
    first = replace(ctx, start_offsets={topic_name: {0: 50, 1: 50, 2: 50}})
    run_pipeline(first, ["bronze"], NOW, spark=spark)
    assert count(ctx.table_path("bronze")) == 300 - 150
    with pytest.raises(KappalakeError, match="checkpoint .* exists") as error:
        run_pipeline(first, ["bronze"], NOW, spark=spark)
    assert "kappalake backfill" in str(error.value)
