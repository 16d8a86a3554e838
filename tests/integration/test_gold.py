"""Gold against the real broker, Spark, Delta and chDB: ClickHouse FINAL equals an independent pandas
computation of the windows over the unique on-time events; late pairs land in the late-events table;
replayed batches change nothing; the only Spark state is the watermark-bounded dedupe."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from kappalake.generator import GeneratorOptions
from kappalake.io.delta.stream import Trigger
from kappalake.pipelines.produce import produce
from kappalake.pipelines.runner import run_pipeline
from kappalake.runtime.context import RunContext
from tests.integration.gold_reference import as_naive_utc, expected_view, unique_events
from tests.integration.kafka_helpers import consume_all

START = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
KEY = "test-pii-key"
NOW = Trigger(available_now=True)


@pytest.fixture(autouse=True)
def pii_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAPPALAKE_PII_KEY", KEY)


def final_rows(clickhouse, table: str) -> pd.DataFrame:
    return clickhouse.query_arrow(f"SELECT * FROM `{table}` FINAL").to_pandas()


def raw_count(clickhouse, table: str) -> int:
    return int(clickhouse.rows(f"SELECT count() FROM `{table}`")[0][0])


def produce_rounds(ctx: RunContext, bootstrap: str, spark, rounds: list[dict]) -> list[list[bytes]]:
    """Produce each round and run gold after it; return each round's record values."""
    topic = ctx.pipeline.source.subscribe[0]  # type: ignore[index]
    values: list[list[bytes]] = []
    old: set[tuple[int, int]] = set()
    for spec in rounds:
        produce(ctx, events=spec["events"], options=spec["options"], start_time=spec["start"],
                events_per_second=spec["eps"])
        records = sorted(consume_all(bootstrap, topic), key=lambda r: (r[0], r[1]))
        values.append([value for partition, offset, _, value in records if (partition, offset) not in old])
        old = {(partition, offset) for partition, offset, _, _ in records}
        run_pipeline(ctx, ["gold"], NOW, spark=spark)
    return values


def compare(clickhouse, ctx: RunContext, events: pd.DataFrame, exact: tuple[str, ...], close: tuple[str, ...],
            approx: tuple[str, ...] = ()) -> dict[str, int]:
    """Assert every view's FINAL rows equal the reference; return late pairs per view."""
    late_counts = {}
    for name, view in ctx.pipeline.gold.views.items():
        expected, late = expected_view(events, ctx.pipeline, view)
        late_counts[name] = len(late)
        actual = final_rows(clickhouse, view.clickhouse.table)
        keys = [*view.group_by, "window_start", "window_end"]
        expected = expected.assign(window_start=expected.window_start.map(as_naive_utc),
                                   window_end=expected.window_end.map(as_naive_utc))
        actual = actual.assign(window_start=actual.window_start.map(as_naive_utc),
                               window_end=actual.window_end.map(as_naive_utc))
        assert len(actual) == len(expected), f"{name}: {len(actual)} rows in ClickHouse, {len(expected)} expected"
        merged = expected.merge(actual, on=keys, suffixes=("_exp", "_act"), how="outer", indicator=True)
        assert (merged["_merge"] == "both").all(), f"{name}: windows differ"
        for metric in view.metrics:
            exp, act = merged[f"{metric}_exp"], merged[f"{metric}_act"]
            if metric in exact:
                assert (exp.astype("int64") == act.astype("int64")).all(), f"{name}.{metric}"
            elif metric in close:
                pairs = zip(exp.astype(float), act.astype(float), strict=True)
                assert all((math.isnan(e) and (a is None or math.isnan(a))) or math.isclose(e, a, rel_tol=1e-9, abs_tol=0.006)
                           for e, a in pairs), f"{name}.{metric}"
            elif metric in approx:  # HyperLogLog++: exact for these small sets nearly always
                off = (exp.astype("int64") - act.astype("int64")).abs()
                assert off.max() <= 1 and (off == 0).mean() > 0.99, f"{name}.{metric}"
    return late_counts


def test_payments_gold_equals_reference_with_late_and_duplicate_events(spark, make_context, topic_name, bootstrap,
                                                                        clickhouse) -> None:
    ctx = make_context("payments", topic_name)
    rounds = [
        {"events": 3000, "start": START, "eps": 20.0,
         "options": GeneratorOptions(seed=3, duplicate_fraction=0.05, malformed_fraction=0.03, late_fraction=0.03)},
        {"events": 1500, "start": START + timedelta(seconds=150), "eps": 20.0,
         "options": GeneratorOptions(seed=4, duplicate_fraction=0.05, malformed_fraction=0.03, late_fraction=0.08)},
    ]
    values = produce_rounds(ctx, bootstrap, spark, rounds)
    events = unique_events(values, ctx.pipeline, KEY)

    late_counts = compare(clickhouse, ctx, events, exact=("txn_count",), close=("amount_sum", "amount_max"),
                          approx=("merchants", "countries"))
    assert late_counts["card_velocity_1m"] > 20 and late_counts["card_velocity_5m_sliding"] > 0
    late = DeltaTable(ctx.table_path("late_events")).to_pandas()
    assert late.groupby("view").size().to_dict() == {k: v for k, v in late_counts.items() if v}
    assert set(late.columns) >= {"view", "event_id", "event_time", "group_key", "window_start", "window_end",
                                 "watermark", "event", "pipeline", "pipeline_version", "batch_id", "detected_at"}
    assert (late.window_end <= late.watermark).all()

    # Replaying a batch changes nothing: forget the last commit of every gold query and run again.
    # (Merges stopped meanwhile: one would collapse replaced rows and race the raw counts.)
    for v in ctx.pipeline.gold.views.values():
        clickhouse.command(f"SYSTEM STOP MERGES `{v.clickhouse.table}`")
        clickhouse.command(f"SYSTEM STOP MERGES `{v.clickhouse.table}_state`")
    tables = {v.clickhouse.table: (raw_count(clickhouse, v.clickhouse.table), final_rows(clickhouse, v.clickhouse.table))
              for v in ctx.pipeline.gold.views.values()}
    states = {t: raw_count(clickhouse, f"{t}_state") for t in tables}
    commits = Path(ctx.checkpoint_path("gold")) / "commits"
    last = max(int(p.name) for p in commits.iterdir() if p.name.isdigit())
    (commits / str(last)).unlink()
    (commits / f".{last}.crc").unlink(missing_ok=True)
    run_pipeline(ctx, ["gold"], NOW, spark=spark)
    assert len(DeltaTable(ctx.table_path("late_events")).to_pandas()) == len(late)
    for table, (count, rows) in tables.items():
        assert raw_count(clickhouse, table) == count, f"{table}: a replayed batch inserted rows again"
        pd.testing.assert_frame_equal(final_rows(clickhouse, table).sort_values(list(rows.columns[:2])).reset_index(drop=True),
                                      rows.sort_values(list(rows.columns[:2])).reset_index(drop=True))
        assert raw_count(clickhouse, f"{table}_state") == states[table], f"{table}_state: a replay merged twice"
        clickhouse.command(f"SYSTEM START MERGES `{table}`")
        clickhouse.command(f"SYSTEM START MERGES `{table}_state`")


def test_iot_gold_equals_reference(spark, make_context, topic_name, bootstrap, clickhouse) -> None:
    ctx = make_context("iot", topic_name)
    rounds = [
        {"events": 2000, "start": START, "eps": 40.0,
         "options": GeneratorOptions(seed=5, duplicate_fraction=0.05, malformed_fraction=0.03)},
        {"events": 1000, "start": START + timedelta(seconds=50), "eps": 40.0,
         "options": GeneratorOptions(seed=6, duplicate_fraction=0.05, late_fraction=0.1, late_min_seconds=60,
                                     late_max_seconds=120)},
    ]
    values = produce_rounds(ctx, bootstrap, spark, rounds)
    events = unique_events(values, ctx.pipeline, None)
    late_counts = compare(clickhouse, ctx, events, exact=("readings",),
                          close=("value_avg", "value_min", "value_max", "value_stddev"))
    assert late_counts["sensor_5s"] > 20 and late_counts["sensor_stddev_1m"] > 0


def test_gold_state_is_only_the_dedupe_bounded_by_its_watermark_on_a_long_live_run(spark, make_context, topic_name,
                                                                                 clickhouse) -> None:
    """Eight minutes of event time through a live gold job: no window is kept in Spark state (windows merge
    into ClickHouse per batch); the one state operator is the event-id dedupe, and it stops growing."""
    import threading
    import time

    ctx = make_context("iot", topic_name)
    # Dedupe by event time (silver.dedupe_time), so eight minutes of event time pass its 1-minute watermark
    # within this short run (by default it runs on the arrival time and bounds the same way over real time).
    silver = ctx.pipeline.silver.model_copy(update={"dedupe_time": "event_time"})
    ctx = replace(ctx, pipeline=ctx.pipeline.model_copy(update={"silver": silver}))
    produce(ctx, events=300, options=GeneratorOptions(seed=7), start_time=START, events_per_second=10.0)
    results: list = []
    done: list[int] = []

    def drained(tracker) -> bool:
        """The producer finished and the gold query has read everything."""
        gold, history = tracker.totals.get("iot.gold"), tracker.history.get("iot.gold", [])
        return bool(done) and gold is not None and gold.input_rows >= done[0] and len(history) > 2 and \
            all(int(p.get("numInputRows") or 0) == 0 for p in history[-2:])

    runner = threading.Thread(target=lambda: results.append(
        run_pipeline(ctx, ["gold"], Trigger(interval="1 second"), spark=spark, timeout=300, until=drained)))
    runner.start()
    time.sleep(15)  # let the query start and take the first round
    for minute in range(1, 9):
        produce(ctx, events=600, options=GeneratorOptions(seed=7 + minute),
                start_time=START + timedelta(seconds=30 + 60 * (minute - 1)), events_per_second=10.0)
        time.sleep(5)
    done.append(300 + 8 * 600)
    runner.join(timeout=360)
    assert results, "the live run did not return"
    history = [p for p in results[0].progress["iot.gold"] if p.get("numInputRows", 0) > 0]
    assert all(len(p["stateOperators"]) == 1 for p in history), "gold keeps state besides the dedupe"
    state = [p["stateOperators"][0]["numRowsTotal"] for p in history]
    assert len(state) >= 4, f"too few batches to judge: {state}"
    half = len(state) // 2
    emitted = clickhouse.rows(f"SELECT count() FROM `{ctx.pipeline.gold.views['sensor_5s'].clickhouse.table}` FINAL")[0][0]
    # The dedupe keeps an id while the watermark (silver.watermark, 1 minute) covers it:
    # unbounded state grows with every round; bounded state levels off (one batch may hold two rounds on a
    # loaded machine, so judge the typical batch of the second half and the smaller of the last two).
    assert statistics.median(state[half:]) <= 1.5 * max(state[:half]), f"state keeps growing: {state}"
    assert min(state[-2:]) <= 1.5 * max(state[:half]), f"state keeps growing: {state}"
    assert emitted > 0
