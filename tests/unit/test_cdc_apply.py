"""Debezium change batches applied to Delta exactly once: current state (delete and mark modes) and
SCD type 2 history. Real Spark + Delta on tmp_path tables; every assertion compares exact rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from kappalake.io.delta.cdc_apply import ApplyCounts, apply_changes, latest_change
from kappalake.io.delta.scd2 import apply_history

KEYS = ["order_id"]
APP = "kappalake:orders:cdc:query-1"
BASE = datetime(2026, 1, 1, 12, 0, 0)
TOPIC = "pg.public.orders"
CDC = "cdc_op string, cdc_lsn bigint, cdc_ts timestamp"
LINEAGE = "source_topic string, source_partition int, source_offset bigint, kafka_timestamp timestamp"
SCHEMA = f"order_id bigint, status string, amount decimal(12,2), {CDC}, {LINEAGE}"
SCHEMA_NOTE = f"order_id bigint, status string, amount decimal(12,2), note string, {CDC}, {LINEAGE}"
FAST_DELTA = {"spark.sql.shuffle.partitions": "1", "spark.databricks.delta.snapshotPartitions": "1"}
STATE = ["order_id", "status", "amount", "cdc_op", "cdc_lsn", "cdc_ts", "source_offset"]
HISTORY = ["order_id", "status", "valid_from", "valid_to", "is_current", "cdc_op", "end_op", "cdc_lsn",
           "end_lsn"]


@pytest.fixture(scope="module", autouse=True)
def fast_delta(spark):
    saved = {key: spark.conf.get(key, None) for key in FAST_DELTA}
    for key, value in FAST_DELTA.items():
        spark.conf.set(key, value)
    yield
    for key, value in saved.items():
        spark.conf.unset(key) if value is None else spark.conf.set(key, value)


def ts(lsn: int) -> datetime:
    return BASE + timedelta(seconds=lsn)


def amt(lsn: int) -> Decimal:
    return Decimal(f"{lsn}.50")


def ch(key: int, op: str, lsn: int | None, offset: int, status: str | None = None, *extra) -> tuple:
    """One change event; a tombstone ('t') carries only the key (and lineage)."""
    if op == "t":
        return (key, None, None, *[None for _ in extra], "t", None, None, TOPIC, 0, offset, ts(offset))
    return (key, status or f"s{lsn}", amt(lsn), *extra, op, lsn, ts(lsn), TOPIC, 0, offset, ts(offset))


def batch(spark, rows: list[tuple], schema: str = SCHEMA):
    return spark.createDataFrame(rows, schema)


def rows(spark, path: Path, columns: list[str]) -> list[tuple]:
    df = spark.read.format("delta").load(str(path))
    return sorted(tuple(r) for r in df.select(*columns).collect())


def state(key: int, status: str, op: str, lsn: int, offset: int) -> tuple:
    return (key, status, amt(lsn), op, lsn, ts(lsn), offset)


def delta_version(path: Path) -> int:
    return max(int(commit.stem) for commit in (path / "_delta_log").glob("*.json"))


# --- pure helper ------------------------------------------------------------------------------------

def test_latest_change_prefers_lsn_then_offset_and_a_tombstone_only_when_last(spark) -> None:
    changes = batch(spark, [
        ch(1, "c", 10, 0), ch(1, "u", 12, 1), ch(1, "u", 11, 2), ch(1, "u", 12, 3, "dup"),  # lsn, then offset
        ch(2, "d", 20, 4), ch(2, "t", None, 5),                                              # tombstone last
        ch(3, "d", 30, 6), ch(3, "t", None, 7), ch(3, "c", 31, 8),                           # re-insert after it
    ])
    got = sorted((r.order_id, r.cdc_op, r.cdc_lsn, r.source_offset) for r in latest_change(changes, KEYS).collect())
    assert got == [(1, "u", 12, 3), (2, "t", None, 5), (3, "c", 31, 8)]


# --- current state, delete mode -----------------------------------------------------------------

def test_inserts_updates_deletes_converge_and_deletes_are_recorded(spark, tmp_path: Path) -> None:
    path = tmp_path / "orders"
    counts = apply_changes(batch(spark, [
        ch(1, "c", 10, 0), ch(2, "c", 11, 1), ch(1, "u", 12, 2, "paid"), ch(3, "r", 5, 3),
        ch(2, "d", 14, 4), ch(2, "t", None, 5), ch(4, "d", 15, 6), ch(1, "u", 13, 7, "shipped"),
    ]), str(path), KEYS, APP, 0)
    assert counts == ApplyCounts(applied=True, inserted=2, updated=0, deleted=0)
    assert rows(spark, path, STATE) == [state(1, "shipped", "u", 13, 7), state(3, "s5", "r", 5, 3)]
    # the winner of key 2 is the tombstone; the delete lsn is recorded all the same (key 4 never existed)
    assert rows(spark, Path(str(path) + "_deletes"), ["order_id", "cdc_lsn"]) == [(2, 14), (4, 15)]
    expected_columns = ["order_id", "status", "amount", "cdc_op", "cdc_lsn", "cdc_ts", "source_topic",
                        "source_partition", "source_offset", "kafka_timestamp"]
    assert spark.read.format("delta").load(str(path)).columns == expected_columns

    counts = apply_changes(batch(spark, [ch(1, "u", 16, 8, "done"), ch(3, "d", 17, 9)]), str(path), KEYS, APP, 1)
    assert counts == ApplyCounts(applied=True, inserted=0, updated=1, deleted=1)
    assert rows(spark, path, STATE) == [state(1, "done", "u", 16, 8)]


def test_the_same_batch_id_twice_is_applied_once(spark, tmp_path: Path) -> None:
    path, tombstones = tmp_path / "orders", tmp_path / "deletes"
    first = [ch(1, "c", 10, 0), ch(2, "c", 11, 1), ch(2, "d", 12, 2)]
    assert apply_changes(batch(spark, first), str(path), KEYS, APP, 0, tombstones_path=str(tombstones)).applied
    versions = delta_version(path), delta_version(tombstones)
    # a retry of batch 0 after a crash (here with other content, to make a second apply visible)
    again = [ch(1, "u", 20, 3, "again"), ch(3, "c", 21, 4), ch(1, "d", 22, 5)]
    counts = apply_changes(batch(spark, again), str(path), KEYS, APP, 0, tombstones_path=str(tombstones))
    assert counts == ApplyCounts(applied=False)
    assert (delta_version(path), delta_version(tombstones)) == versions
    assert rows(spark, path, STATE) == [state(1, "s10", "c", 10, 0)]
    assert rows(spark, tombstones, ["order_id", "cdc_lsn"]) == [(2, 12)]
    # the next batch id applies
    apply_changes(batch(spark, again[:2]), str(path), KEYS, APP, 1, tombstones_path=str(tombstones))
    assert rows(spark, path, STATE) == [state(1, "again", "u", 20, 3), state(3, "s21", "c", 21, 4)]


def test_redelivered_older_changes_are_noops_and_never_resurrect_a_deleted_key(spark, tmp_path: Path) -> None:
    path = tmp_path / "orders"
    apply_changes(batch(spark, [ch(1, "c", 10, 0), ch(2, "c", 11, 1), ch(1, "u", 12, 2, "paid")]),
                  str(path), KEYS, APP, 0)
    apply_changes(batch(spark, [ch(2, "d", 14, 3), ch(2, "t", None, 4)]), str(path), KEYS, APP, 1)
    # Kafka Connect restarted: everything again (one equal-lsn duplicate with other content), the
    # redelivered delete only in the next batch, so nothing in this one stops the older insert of key 2
    counts = apply_changes(batch(spark, [ch(1, "c", 10, 5), ch(2, "c", 11, 6), ch(1, "u", 12, 7, "dup")]),
                           str(path), KEYS, APP, 2)
    assert counts == ApplyCounts(applied=True, inserted=0, updated=0, deleted=0)
    assert rows(spark, path, STATE) == [state(1, "paid", "u", 12, 2)]
    counts = apply_changes(batch(spark, [ch(2, "d", 14, 8), ch(2, "t", None, 9)]), str(path), KEYS, APP, 3)
    assert counts == ApplyCounts(applied=True, inserted=0, updated=0, deleted=0)
    assert rows(spark, path, STATE) == [state(1, "paid", "u", 12, 2)]
    assert rows(spark, Path(str(path) + "_deletes"), ["order_id", "cdc_lsn"]) == [(2, 14)]


def test_delete_then_reinsert_within_one_batch_and_across_batches(spark, tmp_path: Path) -> None:
    path = tmp_path / "orders"
    apply_changes(batch(spark, [
        ch(1, "c", 10, 0), ch(1, "d", 11, 1), ch(1, "t", None, 2), ch(1, "c", 12, 3, "again"),
        ch(2, "c", 13, 4), ch(2, "d", 14, 5),
    ]), str(path), KEYS, APP, 0)
    assert rows(spark, path, STATE) == [state(1, "again", "c", 12, 3)]
    apply_changes(batch(spark, [ch(2, "c", 20, 6, "back"), ch(1, "c", 10, 7)]), str(path), KEYS, APP, 1)
    assert rows(spark, path, STATE) == [state(1, "again", "c", 12, 3), state(2, "back", "c", 20, 6)]
    assert rows(spark, Path(str(path) + "_deletes"), ["order_id", "cdc_lsn"]) == [(1, 11), (2, 14)]


def test_a_lone_tombstone_deletes_without_lsn_and_records_nothing(spark, tmp_path: Path) -> None:
    path = tmp_path / "orders"
    apply_changes(batch(spark, [ch(1, "c", 10, 0), ch(2, "c", 11, 1)]), str(path), KEYS, APP, 0)
    # the delete itself was compacted away; a tombstone for an unknown key inserts nothing
    counts = apply_changes(batch(spark, [ch(1, "t", None, 2), ch(9, "t", None, 3)]), str(path), KEYS, APP, 1)
    assert counts == ApplyCounts(applied=True, inserted=0, updated=0, deleted=1)
    assert rows(spark, path, STATE) == [state(2, "s11", "c", 11, 1)]
    assert rows(spark, Path(str(path) + "_deletes"), ["order_id", "cdc_lsn"]) == []


# --- current state, mark mode -------------------------------------------------------------------

def test_mark_mode_keeps_deleted_rows_flagged_and_flips_back_on_reinsert(spark, tmp_path: Path) -> None:
    path = tmp_path / "orders"
    columns = [*STATE, "cdc_deleted"]
    apply_changes(batch(spark, [
        ch(1, "c", 10, 0), ch(2, "c", 11, 1), ch(2, "d", 12, 2, "before"), ch(2, "t", None, 3), ch(3, "d", 5, 4),
    ]), str(path), KEYS, APP, 0, deletes="mark")
    expected = [(*state(1, "s10", "c", 10, 0), False), (*state(2, "before", "d", 12, 2), True),
                (*state(3, "s5", "d", 5, 4), True)]
    assert rows(spark, path, columns) == expected
    # redelivered older changes (also below the lsn of a delete never seen as a row) change nothing
    apply_changes(batch(spark, [ch(2, "c", 11, 5), ch(3, "c", 4, 6), ch(1, "u", 10, 7, "dup")]),
                  str(path), KEYS, APP, 1, deletes="mark")
    assert rows(spark, path, columns) == expected
    apply_changes(batch(spark, [ch(2, "c", 20, 8, "back"), ch(1, "d", 21, 9), ch(1, "t", None, 10)]),
                  str(path), KEYS, APP, 2, deletes="mark")
    assert rows(spark, path, columns) == [(*state(1, "s21", "d", 21, 9), True), (*state(2, "back", "c", 20, 8), False),
                                          (*state(3, "s5", "d", 5, 4), True)]
    assert not Path(str(path) + "_deletes").exists()


# --- a column added at the source ------------------------------------------------------------------

def test_a_new_column_is_added_to_state_and_history(spark, tmp_path: Path) -> None:
    path, history = tmp_path / "orders", tmp_path / "orders_history"
    first = batch(spark, [ch(1, "c", 10, 0), ch(2, "c", 11, 1)])
    apply_changes(first, str(path), KEYS, APP, 0)
    apply_history(first, str(history), KEYS, APP, 0)
    second = batch(spark, [ch(1, "u", 12, 2, None, "gift"), ch(3, "c", 13, 3, None, "new")], SCHEMA_NOTE)
    apply_changes(second, str(path), KEYS, APP, 1)
    apply_history(second, str(history), KEYS, APP, 1)
    assert rows(spark, path, ["order_id", "status", "note", "cdc_lsn"]) == [
        (1, "s12", "gift", 12), (2, "s11", None, 11), (3, "s13", "new", 13)]
    assert rows(spark, history, ["order_id", "status", "note", "cdc_lsn", "end_lsn", "is_current"]) == [
        (1, "s10", None, 10, 12, False), (1, "s12", "gift", 12, None, True), (2, "s11", None, 11, None, True),
        (3, "s13", "new", 13, None, True)]


# --- SCD type 2 history -------------------------------------------------------------------------

def version(key: int, lsn: int, op: str, end: tuple[str, int] | None = None) -> tuple:
    end_op, end_lsn = end or (None, None)
    return (key, f"s{lsn}", ts(lsn), ts(end_lsn) if end_lsn else None, end is None, op, end_op, lsn, end_lsn)


def test_history_keeps_every_change_of_a_batch_in_order(spark, tmp_path: Path) -> None:
    path = tmp_path / "history"
    changes = [
        ch(1, "c", 10, 0), ch(1, "u", 11, 1), ch(1, "u", 13, 3), ch(1, "u", 12, 2), ch(1, "u", 12, 4),  # a duplicate
        ch(1, "u", 14, 5),
        ch(2, "c", 20, 6), ch(2, "d", 21, 7), ch(2, "t", None, 8), ch(2, "c", 22, 9),                    # re-insert
        ch(3, "c", 30, 10), ch(3, "d", 31, 11), ch(3, "t", None, 12),                                     # deleted
    ]
    apply_history(batch(spark, changes), str(path), KEYS, APP, 0)
    expected = [
        version(1, 10, "c", ("u", 11)), version(1, 11, "u", ("u", 12)), version(1, 12, "u", ("u", 13)),
        version(1, 13, "u", ("u", 14)), version(1, 14, "u"),
        version(2, 20, "c", ("d", 21)), version(2, 22, "c"),
        version(3, 30, "c", ("d", 31)),
    ]
    assert rows(spark, path, HISTORY) == sorted(expected)
    assert spark.read.format("delta").load(str(path)).columns == [
        "order_id", "status", "amount", "valid_from", "valid_to", "is_current", "cdc_op", "end_op", "cdc_lsn",
        "end_lsn"]
    before = delta_version(path)
    # the same batch id again (with new content) is skipped
    apply_history(batch(spark, [ch(1, "u", 15, 13)]), str(path), KEYS, APP, 0)
    assert delta_version(path) == before
    # the whole batch redelivered plus one new change: only the new change lands
    apply_history(batch(spark, [*changes, ch(1, "u", 15, 13)]), str(path), KEYS, APP, 1)
    expected = [*expected[:4], version(1, 14, "u", ("u", 15)), version(1, 15, "u"), *expected[5:]]
    assert rows(spark, path, HISTORY) == sorted(expected)


def test_history_across_batches_closes_deletes_and_skips_replays(spark, tmp_path: Path) -> None:
    path = tmp_path / "history"
    apply_history(batch(spark, [ch(1, "r", 10, 0), ch(2, "r", 9, 1)]), str(path), KEYS, APP, 0)
    apply_history(batch(spark, [ch(1, "u", 11, 2), ch(2, "d", 12, 3), ch(2, "t", None, 4)]), str(path), KEYS, APP, 1)
    assert rows(spark, path, HISTORY) == [version(1, 10, "r", ("u", 11)), version(1, 11, "u"),
                                          version(2, 9, "r", ("d", 12))]
    # redelivered: an older insert of the deleted key, a duplicate update; then a real re-insert and a delete
    apply_history(batch(spark, [ch(2, "c", 9, 5), ch(1, "u", 11, 6), ch(2, "c", 13, 7), ch(1, "d", 14, 8)]),
                  str(path), KEYS, APP, 2)
    assert rows(spark, path, HISTORY) == sorted([version(1, 10, "r", ("u", 11)), version(1, 11, "u", ("d", 14)),
                                                 version(2, 9, "r", ("d", 12)), version(2, 13, "c")])
