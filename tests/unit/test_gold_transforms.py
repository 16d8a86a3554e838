"""Gold window transforms on small batch DataFrames: window framing, the late rule, every metric kind."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import Column
from pyspark.sql import functions as F

from kappalake.config.models import GoldViewConfig
from kappalake.errors import ConfigError
from kappalake.transforms.gold import (aggregate_sessions, aggregate_windows, assign_windows, cutoff, late_events,
                                       load_hook, wm_base)

T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
TIME = "event_time"
BASE = "_wm_base_event_time"
EVENTS = ("event_id string, card string, country string, merchant string, amount decimal(12,2), score double, "
          f"event_time timestamp, {BASE} timestamp")
FRAMED = "window_start timestamp, window_end timestamp, _closed boolean"
HOOK = "tests.unit.test_gold_transforms:sum_of_squares"
NOT_A_FUNCTION = 42


def sum_of_squares(column: str | None) -> Column:
    """A custom metric hook: the sum of the squares of ``column``."""
    assert column is not None
    return F.sum(F.col(column) * F.col(column))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def view(window: dict[str, Any], group_by: tuple[str, ...] = ("card",), metrics: dict[str, Any] | None = None,
         having: str | None = None) -> GoldViewConfig:
    return GoldViewConfig.model_validate({
        "window": window, "group_by": list(group_by), "metrics": metrics or {"n": {"fn": "count"}},
        "having": having, "clickhouse": {"table": "gold_test"}})


TUMBLING = {"kind": "tumbling", "size": "1 minute"}
SLIDING = {"kind": "sliding", "size": "5 minutes", "slide": "1 minute"}
SESSION = {"kind": "session", "gap": "1 minute"}


def event(event_id: str, minute: float, base: float | None = None, card: str = "c1", country: str = "GB",
          merchant: str = "m1", amount: str | None = "1.00", score: float | None = 1.0) -> tuple[Any, ...]:
    return (event_id, card, country, merchant, None if amount is None else Decimal(amount), score, at(minute),
            None if base is None else at(base))


@pytest.fixture(autouse=True)
def one_shuffle_partition(spark):
    """Aggregations on a handful of rows run much faster on one partition."""
    saved = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "1")
    yield
    spark.conf.set("spark.sql.shuffle.partitions", saved)


def test_tests_are_importable_as_the_hook_module() -> None:
    assert load_hook(HOOK) is sum_of_squares


def test_wm_base_and_cutoff_name_and_compute_the_view_cutoff(spark) -> None:
    assert wm_base(TIME) == BASE
    frame = spark.createDataFrame([(at(3),), (None,)], f"{BASE} timestamp")
    rows = frame.select(cutoff(TIME, "120 seconds").alias("c")).collect()
    assert [r["c"] for r in rows] == [datetime.fromtimestamp(at(1).timestamp()), None]


# --------------------------------------------------------------------------- assign_windows

def test_tumbling_windows_and_the_closed_boundary(spark) -> None:
    """Delay 2 minutes: the window [12:00, 12:01) is closed exactly when base - 2m >= 12:01."""
    events = spark.createDataFrame([
        event("no-base", 0.5),                       # first batch: nothing is late
        event("equal", 0.5, base=3),                 # cutoff 12:01 == window_end: closed
        event("just-before", 0.5, base=3 - 1 / 60e6),  # cutoff one microsecond before window_end: open
        event("next-window", 1, base=3),             # 12:01 starts the next window [12:01, 12:02)
        event("last-micro", 1 - 1 / 60e6, base=10),   # 12:00:59.999999 is still in [12:00, 12:01)
    ], EVENTS)

    framed = assign_windows(events, view(TUMBLING), TIME, "2 minutes")

    assert framed.columns == [*events.columns, "window_start", "window_end", "_closed"]
    expected = spark.createDataFrame([
        ("no-base", at(0), at(1), False),
        ("equal", at(0), at(1), True),
        ("just-before", at(0), at(1), False),
        ("next-window", at(1), at(2), False),
        ("last-micro", at(0), at(1), True),
    ], f"event_id string, {FRAMED}")
    assert_df_equality(framed.select("event_id", "window_start", "window_end", "_closed"), expected,
                       ignore_nullable=True, ignore_row_order=True)


def test_sliding_windows_give_one_row_per_overlapping_window(spark) -> None:
    """Size 5m, slide 1m: an event at 12:03:30 is in the five windows starting 11:59 .. 12:03; with the
    cutoff at 12:04 only the window ending at 12:04 had closed."""
    events = spark.createDataFrame([event("e1", 3.5, base=6), event("e2", 3, base=None)], EVENTS)

    framed = assign_windows(events, view(SLIDING), TIME, "2 minutes")

    expected = spark.createDataFrame(
        [("e1", at(s), at(s + 5), s == -1) for s in (-1, 0, 1, 2, 3)]
        + [("e2", at(s), at(s + 5), False) for s in (-1, 0, 1, 2, 3)],
        f"event_id string, {FRAMED}")
    assert framed.count() == 10
    assert_df_equality(framed.select("event_id", "window_start", "window_end", "_closed"), expected,
                       ignore_nullable=True, ignore_row_order=True)


def test_session_views_frame_each_event_as_its_own_session(spark) -> None:
    """Gap 1 minute: the event's own session [t, t + 1m), closed when it ends at or before the cutoff."""
    events = spark.createDataFrame([
        event("open", 0.5, base=3.4),     # cutoff 12:01:24 < 12:01:30
        event("equal", 0.5, base=3.5),    # cutoff 12:01:30 == window_end
        event("no-base", 0.5),
    ], EVENTS)

    framed = assign_windows(events, view(SESSION), TIME, "2 minutes")

    expected = spark.createDataFrame([
        ("open", at(0.5), at(1.5), False),
        ("equal", at(0.5), at(1.5), True),
        ("no-base", at(0.5), at(1.5), False),
    ], f"event_id string, {FRAMED}")
    assert_df_equality(framed.select("event_id", "window_start", "window_end", "_closed"), expected,
                       ignore_nullable=True, ignore_row_order=True)


# --------------------------------------------------------------------------- late_events

LATE = ("view string, event_id string, event_time timestamp, group_key string, window_start timestamp, "
        "window_end timestamp, watermark timestamp, event string")


def test_late_events_keep_only_closed_pairs_with_the_event_as_json(spark) -> None:
    events = spark.createDataFrame([
        event("late", 0.5, base=5, card="c1", country="GB", amount="7.50", score=2.5),
        event("on-time", 4.5, base=5, card="c2", country="FR"),
        event("first-batch", 0.5, base=None, card="c3", country="DE"),
    ], EVENTS)

    late = late_events(events, "v1", view(TUMBLING, group_by=("card", "country")), TIME, "2 minutes", "event_id")

    assert late.columns == ["view", "event_id", "event_time", "group_key", "window_start", "window_end",
                            "watermark", "event"]
    rows = late.collect()
    assert len(rows) == 1
    assert json.loads(rows[0]["event"]) == {
        "event_id": "late", "card": "c1", "country": "GB", "merchant": "m1", "amount": 7.5, "score": 2.5,
        "event_time": "2026-11-01T12:00:30.000Z"}
    expected = spark.createDataFrame(
        [("v1", "late", at(0.5), '{"card":"c1","country":"GB"}', at(0), at(1), at(3), rows[0]["event"])], LATE)
    assert_df_equality(late, expected, ignore_nullable=True)


def test_late_events_of_a_sliding_view_list_each_closed_window_once(spark) -> None:
    """Event at 12:03:30, cutoff 12:05: the windows starting 11:59 and 12:00 closed, the other three not."""
    events = spark.createDataFrame([event("e1", 3.5, base=7)], EVENTS)
    events = events.withColumn("event_id", F.lit(17).cast("long"))  # the id is cast to string

    late = late_events(events, "slide", view(SLIDING), TIME, "2 minutes", "event_id")

    expected = spark.createDataFrame(
        [("slide", "17", at(3.5), '{"card":"c1"}', at(s), at(s + 5), at(5), None) for s in (-1, 0)], LATE)
    assert_df_equality(late.withColumn("event", F.lit(None).cast("string")), expected,
                       ignore_nullable=True, ignore_row_order=True)
    assert all(BASE not in r["event"] and '"event_id":17' in r["event"] for r in late.collect())


# --------------------------------------------------------------------------- metrics

ALL_METRICS = {
    "n": {"fn": "count"},
    "n_amount": {"fn": "count", "column": "amount"},
    "total": {"fn": "sum", "column": "amount"},
    "mean": {"fn": "avg", "column": "score"},
    "mean_amount": {"fn": "avg", "column": "amount"},
    "lo": {"fn": "min", "column": "amount"},
    "hi": {"fn": "max", "column": "amount"},
    "sd": {"fn": "stddev", "column": "score"},
    "merchants": {"fn": "approx_count_distinct", "column": "merchant"},
    "p75": {"fn": "percentile", "column": "score", "percentile": 0.75},
    "squares": {"fn": "custom", "column": "score", "hook": HOOK, "merge": "sum"},
}
METRICS_SCHEMA = ("card string, window_start timestamp, window_end timestamp, n long, n_amount long, "
                  "total decimal(22,2), mean double, mean_amount decimal(16,6), lo decimal(12,2), hi decimal(12,2), "
                  "sd double, merchants long, p75 double, squares double")


def metric_events(spark):
    return spark.createDataFrame([
        event("a1", 0.1, amount="10.00", score=1.0, merchant="m1"),
        event("a2", 0.2, amount="20.50", score=2.0, merchant="m2"),
        event("a3", 0.3, amount="5.25", score=3.0, merchant="m1"),
        event("a4", 0.4, amount="4.25", score=4.0, merchant="m3"),
        event("b1", 1.5, amount="3.00", score=7.0, merchant="m1"),
        event("c1", 0.5, card="c2", amount="1.00", score=2.0, merchant="m9"),
        event("c2", 0.6, card="c2", amount=None, score=4.0, merchant="m9"),
    ], EVENTS)


def test_aggregate_windows_computes_every_metric_kind(spark) -> None:
    gold = view(TUMBLING, metrics=ALL_METRICS)
    framed = assign_windows(metric_events(spark), gold, TIME, "2 minutes").where(~F.col("_closed"))

    actual = aggregate_windows(framed, gold)

    expected = spark.createDataFrame([
        ("c1", at(0), at(1), 4, 4, Decimal("40.00"), 2.5, Decimal("10.000000"), Decimal("4.25"), Decimal("20.50"),
         math.sqrt(5 / 3), 3, 3.0, 30.0),
        ("c1", at(1), at(2), 1, 1, Decimal("3.00"), 7.0, Decimal("3.000000"), Decimal("3.00"), Decimal("3.00"),
         None, 1, 7.0, 49.0),  # stddev_samp of a single row is null
        ("c2", at(0), at(1), 2, 1, Decimal("1.00"), 3.0, Decimal("1.000000"), Decimal("1.00"), Decimal("1.00"),
         math.sqrt(2), 1, 4.0, 20.0),  # a null amount counts for count() only
    ], METRICS_SCHEMA)
    assert actual.columns == ["card", "window_start", "window_end", *ALL_METRICS]
    assert_approx_df_equality(actual.orderBy("card", "window_start"), expected, 1e-9, ignore_nullable=True)


def test_aggregate_windows_applies_having_over_the_metrics(spark) -> None:
    gold = view(TUMBLING, metrics={"n": {"fn": "count"}, "total": {"fn": "sum", "column": "amount"}},
                having="n >= 2 AND total > 5")
    framed = assign_windows(metric_events(spark), gold, TIME, "2 minutes")

    actual = aggregate_windows(framed, gold)

    expected = spark.createDataFrame([("c1", at(0), at(1), 4, Decimal("40.00"))],
                                     "card string, window_start timestamp, window_end timestamp, n long, "
                                     "total decimal(22,2)")
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_aggregate_windows_of_a_sliding_view_counts_each_event_in_each_window(spark) -> None:
    gold = view(SLIDING)
    events = spark.createDataFrame([event("e1", 0.5), event("e2", 2.5)], EVENTS)

    actual = aggregate_windows(assign_windows(events, gold, TIME, "2 minutes"), gold)

    counts = {s: sum(1 for t in (0.5, 2.5) if s <= t < s + 5) for s in range(-4, 3)}
    expected = spark.createDataFrame([("c1", at(s), at(s + 5), n) for s, n in counts.items()],
                                     "card string, window_start timestamp, window_end timestamp, n long")
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)


@pytest.mark.parametrize("reference, message", [
    ("kappalake_no_such_module_xyz:fn", "cannot be loaded"),
    ("tests.unit.test_gold_transforms:no_such_hook", "cannot be loaded"),
    ("tests.unit.test_gold_transforms:NOT_A_FUNCTION", "is not a function"),
])
def test_load_hook_rejects_what_cannot_be_a_hook(reference: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_hook(reference)
    assert reference in str(raised.value)


# --------------------------------------------------------------------------- sessions

def test_aggregate_sessions_merges_events_within_the_gap(spark) -> None:
    """Gap 1 minute: 12:00:00, 12:00:30 and 12:01:10 form one session ending 12:02:10; 12:05 starts another;
    sessions are per group key."""
    gold = view(SESSION, metrics={"n": {"fn": "count"}, "total": {"fn": "sum", "column": "amount"}})
    events = spark.createDataFrame([
        event("a", 0, amount="1.00"),
        event("b", 0.5, amount="2.00"),
        event("c", 1 + 10 / 60, amount="3.00"),
        event("d", 5, amount="4.00"),
        event("e", 0.75, card="c2", amount="5.00"),
    ], EVENTS)

    actual = aggregate_sessions(events, gold, TIME)

    expected = spark.createDataFrame([
        ("c1", at(0), at(2 + 10 / 60), 3, Decimal("6.00")),
        ("c1", at(5), at(6), 1, Decimal("4.00")),
        ("c2", at(0.75), at(1.75), 1, Decimal("5.00")),
    ], "card string, window_start timestamp, window_end timestamp, n long, total decimal(22,2)")
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)


def test_aggregate_sessions_applies_having(spark) -> None:
    gold = view(SESSION, having="n > 1")
    events = spark.createDataFrame([event("a", 0), event("b", 0.5), event("c", 5)], EVENTS)

    actual = aggregate_sessions(events, gold, TIME)

    expected = spark.createDataFrame([("c1", at(0), at(1.5), 2)],
                                     "card string, window_start timestamp, window_end timestamp, n long")
    assert_df_equality(actual, expected, ignore_nullable=True)
