"""GoldSink on the session's real chDB: exactly-once inserts (dedup tokens), versions, chunks and retries."""

from __future__ import annotations

import time
import types
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from pyspark.sql import types as T

from kappalake.errors import ClickHouseUnavailable
from kappalake.io.clickhouse import sink as sink_module
from kappalake.io.clickhouse.schema import GoldTable, ensure_table
from kappalake.io.clickhouse.sink import GoldSink, RetryPolicy, VersionClock, is_transient

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")
SCHEMA = T.StructType([
    T.StructField("card", T.StringType(), True),
    T.StructField("window_start", T.TimestampType(), True),
    T.StructField("window_end", T.TimestampType(), True),
    T.StructField("n", T.LongType(), False),
    T.StructField("total", T.DecimalType(22, 2), True),
])
FAST = RetryPolicy(attempts=5, first_delay=0.01, max_delay=0.05)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def view_rows(rows: list[tuple[str, int, int, str | None]]) -> pa.Table:
    """A view result: (card, window minute, n, total) -> keys, window bounds, metrics, in the given order."""
    return pa.table({
        "card": pa.array([r[0] for r in rows], pa.string()),
        "window_start": pa.array([at(r[1]) for r in rows], TS),
        "window_end": pa.array([at(r[1] + 1) for r in rows], TS),
        "n": pa.array([r[2] for r in rows], pa.int64()),
        "total": pa.array([None if r[3] is None else Decimal(r[3]) for r in rows], pa.decimal128(22, 2)),
    })


# Deliberately unsorted: the sink sorts by (card, window_start) before it cuts chunks.
BATCH0 = [("c3", 0, 1, "1.00"), ("c1", 1, 2, "2.50"), ("c1", 0, 3, None), ("c2", 0, 4, "4.00"),
          ("c2", 2, 5, "5.25")]


@pytest.fixture
def table(clickhouse) -> GoldTable:
    gold = GoldTable.from_schema(f"gold_sink_{uuid.uuid4().hex[:12]}", SCHEMA, ("card",))
    ensure_table(clickhouse, gold)
    # Raw row counts below tell inserted from deduplicated rows; a background merge of the
    # ReplacingMergeTree would collapse replaced rows and make them race.
    clickhouse.command(f"SYSTEM STOP MERGES `{gold.name}`")
    return gold


def final(ch, table: GoldTable) -> list[dict[str, Any]]:
    """The table's current rows (FINAL: the highest version of each window), in key order."""
    return ch.query_arrow(f"SELECT card, window_start, window_end, n, total FROM `{table.name}` FINAL "
                          "ORDER BY card, window_start").to_pylist()


def expected(rows: list[tuple[str, int, int, str | None]]) -> list[dict[str, Any]]:
    return sorted(view_rows(rows).to_pylist(), key=lambda r: (r["card"], r["window_start"]))


def raw_count(ch, table: GoldTable) -> int:
    return int(ch.rows(f"SELECT count() FROM `{table.name}`")[0][0])


def versions(ch, table: GoldTable) -> dict[tuple[str, datetime], int]:
    return {(r[0], r[1]): r[2] for r in ch.rows(f"SELECT card, window_start, version FROM `{table.name}` FINAL")}


class FlakyClient:
    """The real client, except that insert_arrow fails according to ``plan`` (one entry per call, then
    delegates): "fail" raises before inserting, "after" inserts and then raises (a lost acknowledgement)."""

    def __init__(self, real, plan: list[str], error: Exception | None = None) -> None:
        self.real = real
        self.plan = list(plan)
        self.error = error or OperationalError("HTTPConnectionPool: connection reset by peer")
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def insert_arrow(self, table: str, data: Any, settings: dict[str, Any] | None = None) -> Any:
        self.calls += 1
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "fail":
            raise self.error
        result = self.real.insert_arrow(table, data, settings=settings)
        if step == "after":
            raise self.error
        return result


# --------------------------------------------------------------------------- exactly once

def test_a_batch_lands_as_written(clickhouse, table) -> None:
    sink = GoldSink(clickhouse, table, chunk_rows=2)
    sink.bind("q1")

    assert sink.write(view_rows(BATCH0), 0) == 5

    assert final(clickhouse, table) == expected(BATCH0)
    assert raw_count(clickhouse, table) == 5
    assert clickhouse.rows(f"SELECT uniqExact(version), min(updated_at) > now() - 60 FROM `{table.name}`") == [(1, 1)]


def test_an_empty_batch_writes_nothing(clickhouse, table) -> None:
    sink = GoldSink(clickhouse, table)
    sink.bind("q1")
    assert sink.write(view_rows([]), 0) == 0
    assert raw_count(clickhouse, table) == 0


def test_a_replayed_batch_inserts_nothing_even_with_a_new_version(clickhouse, table) -> None:
    sink = GoldSink(clickhouse, table, chunk_rows=2)
    sink.bind("q1")
    sink.write(view_rows(BATCH0), 0)
    first = versions(clickhouse, table)

    sink.write(view_rows(BATCH0), 0)  # same query id and batch id: same tokens, though a higher version

    assert raw_count(clickhouse, table) == 5
    assert versions(clickhouse, table) == first
    assert sink.clock.next() > max(first.values()) + 1  # the replay did take a newer version


def test_a_later_batch_supersedes_updated_windows(clickhouse, table) -> None:
    sink = GoldSink(clickhouse, table, chunk_rows=2)
    sink.bind("q1")
    sink.write(view_rows(BATCH0), 0)
    batch1 = [("c1", 0, 30, "30.00"), ("c2", 2, 50, None), ("c4", 0, 1, "0.10")]

    sink.write(view_rows(batch1), 1)

    current = {("c1", 1, 2, "2.50"), ("c2", 0, 4, "4.00"), ("c3", 0, 1, "1.00")} | set(batch1)
    assert final(clickhouse, table) == expected(sorted(current))
    assert raw_count(clickhouse, table) == 8
    v = versions(clickhouse, table)
    assert v[("c1", at(0).replace(tzinfo=None))] > v[("c1", at(1).replace(tzinfo=None))]


def test_the_same_batch_id_of_another_query_is_not_a_replay(clickhouse, table) -> None:
    """The token includes the query id: a new checkpoint (a backfill) writes its batch 0 again."""
    for query_id in ("q-old", "q-new"):
        sink = GoldSink(clickhouse, table, chunk_rows=2)
        sink.bind(query_id)
        sink.write(view_rows(BATCH0), 0)
    assert raw_count(clickhouse, table) == 10
    assert final(clickhouse, table) == expected(BATCH0)


# --------------------------------------------------------------------------- versions

def test_version_clock_is_strictly_increasing_above_its_floor() -> None:
    behind = VersionClock(floor=100, now=lambda: 5)
    assert [behind.next() for _ in range(3)] == [101, 102, 103]
    stuck = VersionClock(now=lambda: 1_000)
    assert [stuck.next() for _ in range(3)] == [1_000, 1_001, 1_002]
    ahead = VersionClock(floor=10, now=iter([50, 40, 60]).__next__)
    assert [ahead.next() for _ in range(3)] == [50, 51, 60]


def test_a_restarted_sink_writes_above_the_tables_highest_version(clickhouse, table, monkeypatch) -> None:
    first = GoldSink(clickhouse, table, chunk_rows=2)
    first.bind("q1")
    first.write(view_rows(BATCH0), 0)
    highest = max(versions(clickhouse, table).values())
    # The restarted process's wall clock is far behind (clock skew, another host): the floor still wins.
    monkeypatch.setattr(sink_module, "time", types.SimpleNamespace(time_ns=lambda: 1_000, sleep=time.sleep))

    restarted = GoldSink(clickhouse, table, chunk_rows=2)
    restarted.bind("q1")
    restarted.write(view_rows([("c1", 0, 99, "9.99")]), 1)

    v = versions(clickhouse, table)
    assert v[("c1", at(0).replace(tzinfo=None))] == highest + 1
    assert final(clickhouse, table)[0] == expected([("c1", 0, 99, "9.99")])[0]


# --------------------------------------------------------------------------- failures

def test_a_replay_after_a_partial_failure_inserts_the_rest_exactly_once(clickhouse, table) -> None:
    broken = FlakyClient(clickhouse, ["ok", "fail"], DatabaseError("Code: 60. DB::Exception: gone (UNKNOWN_TABLE)"))
    sink = GoldSink(broken, table, chunk_rows=2)
    sink.bind("q1")

    with pytest.raises(ClickHouseUnavailable):
        sink.write(view_rows(BATCH0), 7)
    assert raw_count(clickhouse, table) == 2  # chunk 0 landed, chunks 1 and 2 did not

    restarted = GoldSink(clickhouse, table, chunk_rows=2)
    restarted.bind("q1")
    restarted.write(view_rows(BATCH0), 7)
    restarted.write(view_rows(BATCH0), 7)

    assert raw_count(clickhouse, table) == 5
    assert final(clickhouse, table) == expected(BATCH0)


def test_transient_errors_are_retried_into_one_copy(clickhouse, table) -> None:
    flaky = FlakyClient(clickhouse, ["fail", "fail", "ok", "fail"])  # 3 failures spread over two chunks
    sink = GoldSink(flaky, table, chunk_rows=2, retry=FAST)
    sink.bind("q1")

    assert sink.write(view_rows(BATCH0), 0) == 5

    assert flaky.calls == 3 + 3  # three chunks, three failed attempts
    assert raw_count(clickhouse, table) == 5
    assert final(clickhouse, table) == expected(BATCH0)


def test_a_retry_after_a_lost_acknowledgement_does_not_duplicate(clickhouse, table) -> None:
    """The insert reached the table but the client saw an error: the retry reuses the token."""
    flaky = FlakyClient(clickhouse, ["after", "after"])
    sink = GoldSink(flaky, table, chunk_rows=2, retry=FAST)
    sink.bind("q1")

    sink.write(view_rows(BATCH0), 0)

    assert flaky.calls == 5
    assert raw_count(clickhouse, table) == 5
    assert final(clickhouse, table) == expected(BATCH0)


@pytest.mark.parametrize("failures", [5, 8])
def test_retries_exhausted_stop_the_query_for_a_replay(clickhouse, table, failures: int) -> None:
    flaky = FlakyClient(clickhouse, ["fail"] * failures)
    sink = GoldSink(flaky, table, chunk_rows=2, retry=FAST)
    sink.bind("q1")

    with pytest.raises(ClickHouseUnavailable, match="replayed from the checkpoint on restart") as raised:
        sink.write(view_rows(BATCH0), 0)

    message = str(raised.value)
    assert f"`{table.name}`" in message and "failed 5 times" in message
    assert isinstance(raised.value.__cause__, OperationalError)
    assert flaky.calls == 5
    assert raw_count(clickhouse, table) == 0


def test_a_non_transient_error_fails_at_once(clickhouse, table) -> None:
    error = DatabaseError("Code: 60. DB::Exception: Table default.x does not exist. (UNKNOWN_TABLE)")
    flaky = FlakyClient(clickhouse, ["fail"] * 10, error)
    sink = GoldSink(flaky, table, chunk_rows=2, retry=RetryPolicy(attempts=5, first_delay=5))
    sink.bind("q1")

    started = time.monotonic()
    with pytest.raises(ClickHouseUnavailable, match="Code: 60") as raised:
        sink.write(view_rows(BATCH0), 0)

    assert time.monotonic() - started < 2
    assert flaky.calls == 1
    assert raised.value.__cause__ is error
    assert "replayed" not in str(raised.value)
    assert raw_count(clickhouse, table) == 0


@pytest.mark.parametrize("error, transient", [
    (OperationalError("connection refused"), True),
    (ConnectionError("reset"), True),
    (TimeoutError("timed out"), True),
    (DatabaseError("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)"), True),
    (DatabaseError("Code: 241. DB::Exception: Memory limit exceeded (MEMORY_LIMIT_EXCEEDED)"), True),
    (DatabaseError("Code: 159. DB::Exception: Timeout exceeded (TIMEOUT_EXCEEDED)"), True),
    (DatabaseError("Code: 209. DB::Exception: Socket timeout (SOCKET_TIMEOUT)"), True),
    (DatabaseError("Code: 60. DB::Exception: Unknown table (UNKNOWN_TABLE)"), False),
    (DatabaseError("Code: 62. DB::Exception: Syntax error (SYNTAX_ERROR)"), False),
    (DatabaseError("Code: 2520. DB::Exception: not a listed code"), False),
    (DatabaseError("no code at all"), False),
    (ValueError("bad data"), False),
])
def test_is_transient_classifies_errors(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_a_real_chdb_error_is_not_transient(clickhouse) -> None:
    with pytest.raises(DatabaseError) as raised:
        clickhouse.command(f"SELECT * FROM `missing_{uuid.uuid4().hex[:12]}`")
    assert not is_transient(raised.value)


def test_a_real_chdb_memory_limit_error_is_transient(clickhouse) -> None:
    with pytest.raises(DatabaseError) as raised:
        clickhouse.rows("SELECT groupArray(number) FROM numbers(10000000) SETTINGS max_memory_usage = 1000000")
    assert is_transient(raised.value)


def test_is_transient_reads_the_structured_error_code() -> None:
    """clickhouse-connect sets ``code`` on its errors; with show_clickhouse_errors=False the message is generic
    ("The ClickHouse server returned an error") and holds no "Code: N". A memory-limit error is still
    transient. (Fails today: is_transient only parses the message.)"""
    generic = "The ClickHouse server returned an error"
    assert is_transient(DatabaseError(generic, code=241, name="MEMORY_LIMIT_EXCEEDED"))
    assert not is_transient(DatabaseError(generic, code=60, name="UNKNOWN_TABLE"))


def test_retry_delay_backs_off_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=6, first_delay=0.5, max_delay=3.0)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (6, 3.0)]:
        assert 0.8 * base <= policy.delay(attempt) <= 1.2 * base


# --------------------------------------------------------------------------- foreachBatch

def test_the_sink_as_foreach_batch_writes_a_spark_frame(spark, clickhouse, table) -> None:
    written: list[tuple[int, int]] = []
    sink = GoldSink(clickhouse, table, chunk_rows=2, on_written=lambda b, n: written.append((b, n)))
    sink.bind("q1")
    frame = spark.createDataFrame([("c1", at(0), at(1), 3, Decimal("1.25")), ("c2", at(1), at(2), 4, None)],
                                  SCHEMA)

    sink(frame, 3)

    assert written == [(3, 2)]
    assert final(clickhouse, table) == expected([("c1", 0, 3, "1.25"), ("c2", 1, 4, None)])
