"""Partial window states merged batch by batch equal one aggregate over all the events (every metric kind,
tumbling, sliding and session windows); replays, older and newer runs follow the generation rule."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyspark.sql import functions as F

from kappalake.config.models import GoldViewConfig
from kappalake.pipelines.gold import arrow_schema
from kappalake.transforms.gold import aggregate_sessions, aggregate_windows, assign_windows
from kappalake.transforms.window_merge import BATCH, DELETED, GENERATION, finalize, merge_sessions, merge_windows
from kappalake.transforms.window_states import partial_states, session_fragments

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
EVENTS = "card string, merchant string, amount decimal(12,2), score double, event_time timestamp, " \
         "_wm_base_event_time timestamp"
METRICS = {
    "n": {"fn": "count"},
    "total": {"fn": "sum", "column": "amount"},
    "low": {"fn": "min", "column": "amount"},
    "high": {"fn": "max", "column": "score"},
    "mean": {"fn": "avg", "column": "score"},
    "spread": {"fn": "stddev", "column": "score"},
    "merchants": {"fn": "approx_count_distinct", "column": "merchant"},
    "p90": {"fn": "percentile", "column": "score", "percentile": 0.9},
    "squares": {"fn": "custom", "column": "score", "hook": "tests.unit.test_gold_transforms:sum_of_squares",
                "merge": "sum"},
}
G = 1_000  # this run's generation


def view(window: dict[str, Any]) -> GoldViewConfig:
    return GoldViewConfig.model_validate({"window": window, "group_by": ["card"], "metrics": METRICS,
                                          "clickhouse": {"table": "t"}})


TUMBLING = view({"kind": "tumbling", "size": "1 minute"})
SLIDING = view({"kind": "sliding", "size": "3 minutes", "slide": "1 minute"})
SESSION = view({"kind": "session", "gap": "1 minute"})


def events(spark, rows: list[tuple[str, str, str | None, float | None, float]]):
    return spark.createDataFrame(
        [(card, merchant, None if amount is None else Decimal(amount), score, T0 + timedelta(minutes=minute), None)
         for card, merchant, amount, score, minute in rows], EVENTS)


BATCHES = [
    [("c1", "m1", "10.00", 1.0, 0.1), ("c1", "m2", "20.50", 2.0, 0.2), ("c2", "m9", "1.00", 5.0, 0.5),
     ("c1", "m1", "3.00", 7.0, 1.5)],
    [("c1", "m3", "4.25", 4.0, 0.4), ("c1", "m1", "5.25", 3.0, 0.9), ("c2", "m9", None, 4.0, 0.6),
     ("c3", "m4", "2.00", 2.5, 2.2)],
    [("c1", "m2", "1.00", 9.0, 1.1), ("c2", "m8", "7.00", 1.0, 0.7), ("c1", "m5", "8.00", 0.5, 2.9)],
]


def partials(spark, gold: GoldViewConfig, rows) -> pa.Table:
    frame = events(spark, rows)
    if gold.window.kind == "session":
        return session_fragments(frame, gold, "event_time").toArrow()
    framed = assign_windows(frame, gold, "event_time", "10 minutes").where(~F.col("_closed"))
    return partial_states(framed, gold).toArrow()


def one_shot(spark, gold: GoldViewConfig, rows) -> list[dict[str, Any]]:
    frame = events(spark, rows)
    if gold.window.kind == "session":
        result = aggregate_sessions(frame, gold, "event_time")
    else:
        result = aggregate_windows(assign_windows(frame, gold, "event_time", "10 minutes"), gold)
    return sorted(result.collect(), key=lambda r: (r.card, r.window_start))  # type: ignore[return-value]


def as_stored(states: pa.Table) -> pa.Table:
    """What the state table hands back: the live rows, strings as binary the way ClickHouse's Arrow does."""
    live = states.filter(pc.equal(states[DELETED], 0))
    return live.cast(pa.schema([f.with_type(pa.binary()) if pa.types.is_large_string(f.type) or
                                pa.types.is_string(f.type) else f for f in live.schema]))


def apply(spark, gold: GoldViewConfig, batches, generation: int = G) -> tuple[pa.Table, list[pa.Table]]:
    """Merge ``batches`` one by one like the sink does; return the final states and every batch's writes."""
    merge = merge_sessions if gold.window.kind == "session" else merge_windows
    table: dict[tuple[Any, ...], dict[str, Any]] = {}
    writes = []
    for batch_id, rows in enumerate(batches):
        part = partials(spark, gold, rows)
        stored = pa.Table.from_pylist(list(table.values()), schema=_schema(table, part)) if table else None
        out = merge(part, as_stored(stored) if stored is not None else None, gold, generation, batch_id)
        writes.append(out)
        for row in out.to_pylist():
            key = (row["card"], row["window_start"])
            if row[DELETED]:
                table.pop(key, None)
            else:
                table[key] = row
    final = pa.Table.from_pylist(list(table.values()), schema=_schema(table, writes[0]))
    return final, writes


def _schema(table: dict, like: pa.Table) -> pa.Schema:
    names = like.column_names
    fields = [like.schema.field(n).with_nullable(True) for n in names]
    extra = [pa.field(GENERATION, pa.uint64()), pa.field(BATCH, pa.int64()), pa.field(DELETED, pa.uint8())]
    return pa.schema(fields + [f for f in extra if f.name not in names])


def public_schema(spark, gold: GoldViewConfig) -> pa.Schema:
    frame = events(spark, BATCHES[0])
    if gold.window.kind == "session":
        shape = aggregate_sessions(frame, gold, "event_time")
    else:
        shape = aggregate_windows(assign_windows(frame, gold, "event_time", "1 minute"), gold)
    return arrow_schema(shape)


def assert_rows_equal(actual: pa.Table, expected: list[Any]) -> None:
    got = sorted(actual.to_pylist(), key=lambda r: (r["card"], r["window_start"]))
    assert len(got) == len(expected), f"{len(got)} windows, {len(expected)} expected"
    for a, e in zip(got, expected, strict=True):
        e = e.asDict()
        for name, value in e.items():
            if isinstance(value, float) or isinstance(a[name], float):
                assert (value is None and a[name] is None) or math.isclose(float(a[name]), float(value),
                                                                             rel_tol=1e-9), (name, a, e)
            elif name.startswith("window_"):
                assert a[name] == value.replace(tzinfo=timezone.utc), (name, a, e)
            else:
                assert a[name] == value, (name, a, e)


@pytest.mark.parametrize("gold", [TUMBLING, SLIDING, SESSION], ids=["tumbling", "sliding", "session"])
def test_batch_by_batch_merges_equal_one_aggregate_over_all_events(spark, gold) -> None:
    final, _ = apply(spark, gold, BATCHES)
    every = [row for batch in BATCHES for row in batch]
    assert_rows_equal(finalize(final, gold, public_schema(spark, gold)), one_shot(spark, gold, every))


def test_a_replayed_batch_is_skipped_window_by_window(spark) -> None:
    final, writes = apply(spark, TUMBLING, BATCHES[:2])
    stored = as_stored(final)
    again = merge_windows(partials(spark, TUMBLING, BATCHES[1]), stored, TUMBLING, G, 1)
    assert again.num_rows == 0  # every window of batch 1 already holds it
    # A crash after part of the state write: the windows that were written skip, the rest merge once.
    first = as_stored(writes[0])
    half = stored.filter(pc.equal(stored[BATCH], 1)).slice(0, 1)
    written = (half["card"][0].as_py(), half["window_start"][0].as_py())
    keep = [(c, w) != written for c, w in zip(first["card"].to_pylist(), first["window_start"].to_pylist(),
                                               strict=True)]
    partly = pa.concat_tables([first.filter(pa.array(keep)), half])
    repaired = merge_windows(partials(spark, TUMBLING, BATCHES[1]), partly, TUMBLING, G, 1)
    assert repaired.num_rows == writes[1].num_rows - 1


def test_an_older_run_is_replaced_and_a_newer_one_merged(spark) -> None:
    older, _ = apply(spark, TUMBLING, BATCHES[:1], generation=G - 1)
    batch = partials(spark, TUMBLING, BATCHES[0])
    replaced = merge_windows(batch, as_stored(older), TUMBLING, G, 0)
    assert sorted(replaced["n"].to_pylist()) == sorted(batch["n"].to_pylist())  # recomputed, not added

    newer, _ = apply(spark, TUMBLING, BATCHES[:1], generation=G + 1)
    merged = merge_windows(batch, as_stored(newer), TUMBLING, G, 5)
    assert sorted(merged["n"].to_pylist()) == sorted(2 * n for n in batch["n"].to_pylist())
    assert set(merged[GENERATION].to_pylist()) == {G} and set(merged[BATCH].to_pylist()) == {5}


def test_a_bridging_event_merges_two_stored_sessions_and_deletes_the_later_one(spark) -> None:
    batches = [[("c1", "m1", "1.00", 1.0, 0.0), ("c1", "m1", "2.00", 2.0, 1.5)],  # two sessions: gap 1 minute
               [("c1", "m2", "3.00", 3.0, 0.8)]]                                  # bridges them
    final, writes = apply(spark, SESSION, batches)
    assert writes[1].filter(pc.equal(writes[1][DELETED], 1))["window_start"].to_pylist() == \
        [T0 + timedelta(minutes=1.5)]
    assert_rows_equal(finalize(final, SESSION, public_schema(spark, SESSION)),
                      one_shot(spark, SESSION, [r for b in batches for r in b]))
