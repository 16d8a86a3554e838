"""ClickHouse part maintenance: which partitions get which merge (pure), and the merges on the real engine
(chDB behind the local endpoint) lose nothing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from pyspark.sql import types as T

from kappalake.io.clickhouse.schema import GoldTable, ensure_table
from kappalake.ops.maintenance.clickhouse_parts import Partition, merge_parts, partitions, plan_merges

SCHEMA = T.StructType([T.StructField("card", T.StringType(), False),
                       T.StructField("window_start", T.TimestampType(), False),
                       T.StructField("window_end", T.TimestampType(), False),
                       T.StructField("n", T.LongType(), False)])
TODAY = datetime(2026, 12, 6)
YESTERDAY = TODAY - timedelta(days=1)


def day(parts: int, on: datetime, rows: int = 10) -> Partition:
    return Partition(f"{on:%Y%m%d}", parts, rows, on + timedelta(hours=23, minutes=59))


def test_a_closed_day_with_several_parts_is_merged_final() -> None:
    assert plan_merges("t", [day(4, YESTERDAY), day(3, TODAY)], TODAY + timedelta(minutes=5), 50) == [
        "OPTIMIZE TABLE `t` PARTITION ID '20261205' FINAL"]


def test_a_closed_day_in_one_part_or_with_final_merges_off_is_left_alone() -> None:
    assert plan_merges("t", [day(1, YESTERDAY), day(3, TODAY)], TODAY + timedelta(minutes=5), 50) == []
    assert plan_merges("t", [day(4, YESTERDAY), day(3, TODAY)], TODAY + timedelta(minutes=5), 50,
                       final_closed=False) == []


def test_a_day_the_watermark_has_not_passed_is_open() -> None:
    assert plan_merges("t", [day(4, YESTERDAY), day(3, TODAY)], YESTERDAY + timedelta(hours=23), 50) == []


def test_the_open_day_gets_a_plain_merge_only_above_max_parts() -> None:
    assert plan_merges("t", [day(50, TODAY)], TODAY, 50) == []
    assert plan_merges("t", [day(51, TODAY)], TODAY, 50) == ["OPTIMIZE TABLE `t` PARTITION ID '20261206'"]


def test_the_newest_day_is_never_merged_final_even_when_its_windows_look_old() -> None:
    assert plan_merges("t", [day(3, TODAY - timedelta(days=3))], TODAY, 50) == []


def test_merges_on_the_real_engine_leave_a_closed_day_in_one_part_and_lose_no_row(clickhouse) -> None:
    name = f"gold_parts_{uuid.uuid4().hex[:12]}"
    ensure_table(clickhouse, GoldTable.from_schema(name, SCHEMA, ("card",)))
    clickhouse.command(f"SYSTEM STOP MERGES `{name}`")  # one part per insert
    for on, inserts in ((YESTERDAY, 4), (TODAY, 3)):
        for i in range(inserts):
            start = on + timedelta(minutes=i)
            clickhouse.command(f"INSERT INTO `{name}` (card, window_start, window_end, n, version, updated_at) VALUES "
                               f"('c{i % 2}', '{start:%F %T}', '{start + timedelta(minutes=1):%F %T}', 1, {i + 1}, "
                               "now64(3))")
    assert {p.partition_id: p.parts for p in partitions(clickhouse, name)} == {"20261205": 4, "20261206": 3}
    clickhouse.command(f"SYSTEM START MERGES `{name}`")  # OPTIMIZE is refused while merges are stopped

    statements = merge_parts(clickhouse, name, closed_before=TODAY + timedelta(minutes=5), max_parts=50)

    # the server may have merged yesterday's parts in the background first; today's are never merged FINAL
    assert statements in ([f"OPTIMIZE TABLE `{name}` PARTITION ID '20261205' FINAL"], [])
    assert {p.partition_id: p.parts for p in partitions(clickhouse, name)}["20261205"] == 1
    assert clickhouse.rows(f"SELECT count() FROM `{name}`") == [(7,)]
