"""Gold table layout from a view's Spark schema, creation and migration on the session's real chDB."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pyarrow as pa
import pytest
from pyspark.sql import types as T

from kappalake.errors import SchemaConflict
from kappalake.io.clickhouse.schema import DEDUP_WINDOW, GoldTable, clickhouse_type, ensure_table
from kappalake.io.clickhouse.sink import GoldSink

UTC64 = "DateTime64(6, 'UTC')"
SYSTEM = (("version", "UInt64"), ("updated_at", "DateTime64(3, 'UTC')"))


def unique(prefix: str = "gold_schema") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def view_schema(*metrics: T.StructField, keys: tuple[str, ...] = ("card",)) -> T.StructType:
    """A view result as Spark gives it: nullable keys and window bounds, then the metrics."""
    return T.StructType([*(T.StructField(k, T.StringType(), True) for k in keys),
                         T.StructField("window_start", T.TimestampType(), True),
                         T.StructField("window_end", T.TimestampType(), True), *metrics])


N = T.StructField("n", T.LongType(), False)  # count(): never null
TOTAL = T.StructField("total", T.DecimalType(22, 2), True)
MEAN = T.StructField("mean", T.DoubleType(), True)


def columns(ch, table: str) -> dict[str, str]:
    return dict(ch.rows("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                        "AND table = {t:String} ORDER BY position", {"t": table}))


# --------------------------------------------------------------------------- layout

def test_from_schema_maps_types_and_keeps_keys_and_window_non_null() -> None:
    schema = T.StructType([
        T.StructField("card", T.StringType(), True),
        T.StructField("shard", T.IntegerType(), True),
        T.StructField("window_start", T.TimestampType(), True),
        T.StructField("window_end", T.TimestampType(), True),
        N, TOTAL, MEAN,
        T.StructField("merchants", T.LongType(), False),
        T.StructField("last_seen", T.TimestampType(), True),
        T.StructField("any_flag", T.BooleanType(), True),
        T.StructField("ratio", T.FloatType(), True),
        T.StructField("day", T.DateType(), True),
        T.StructField("label", T.StringType(), True),
    ])

    table = GoldTable.from_schema("t", schema, ("card", "shard"))

    assert table.columns == (
        ("card", "String"), ("shard", "Int32"), ("window_start", UTC64), ("window_end", UTC64),
        ("n", "Int64"), ("total", "Nullable(Decimal(22, 2))"), ("mean", "Nullable(Float64)"),
        ("merchants", "Int64"), ("last_seen", f"Nullable({UTC64})"), ("any_flag", "Nullable(Bool)"),
        ("ratio", "Nullable(Float32)"), ("day", "Nullable(Date32)"), ("label", "Nullable(String)"),
        *SYSTEM)
    assert table.sorting_key == ("card", "shard", "window_start")
    assert table.metrics == ("n", "total", "mean", "merchants", "last_seen", "any_flag", "ratio", "day", "label")


def test_a_spark_type_without_mapping_is_a_schema_conflict() -> None:
    with pytest.raises(SchemaConflict, match=r"map<string,string>"):
        clickhouse_type(T.MapType(T.StringType(), T.StringType()), nullable=True)
    # the state tables' sketch and value-list columns
    assert clickhouse_type(T.BinaryType(), nullable=True) == "Nullable(String)"
    assert clickhouse_type(T.ArrayType(T.DoubleType(), False), nullable=False) == "Array(Float64)"
    assert clickhouse_type(T.DecimalType(38, 10), nullable=False) == "Decimal(38, 10)"
    assert clickhouse_type(T.TimestampNTZType(), nullable=True) == f"Nullable({UTC64})"


def test_a_new_table_is_a_replacing_merge_tree_by_day_ordered_by_hour_keys_and_window_start(clickhouse) -> None:
    name = unique()
    table = GoldTable.from_schema(name, view_schema(N, TOTAL, keys=("card", "country")), ("card", "country"))

    assert ensure_table(clickhouse, table) == [table.ddl()]

    engine, engine_full, sorting_key, partition_key = clickhouse.rows(
        "SELECT engine, engine_full, sorting_key, partition_key FROM system.tables "
        "WHERE database = currentDatabase() AND name = {t:String}", {"t": name})[0]
    assert engine == "ReplacingMergeTree"
    assert engine_full.startswith("ReplacingMergeTree(version)")
    assert f"non_replicated_deduplication_window = {DEDUP_WINDOW}" in engine_full
    assert sorting_key == "toStartOfHour(window_start), card, country, window_start"
    assert partition_key == "toDate(window_start)"
    assert " TTL " not in engine_full
    assert columns(clickhouse, name) == {
        "card": "String", "country": "String", "window_start": UTC64, "window_end": UTC64, "n": "Int64",
        "total": "Nullable(Decimal(22, 2))", "version": "UInt64", "updated_at": "DateTime64(3, 'UTC')"}


def engine_full(clickhouse, name: str) -> str:
    return str(clickhouse.rows("SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
                               "AND name = {t:String}", {"t": name})[0][0])


def test_ensure_table_is_idempotent(clickhouse) -> None:
    table = GoldTable.from_schema(unique(), view_schema(N, TOTAL), ("card",))
    ensure_table(clickhouse, table)
    before = columns(clickhouse, table.name)

    assert ensure_table(clickhouse, table) == []
    assert columns(clickhouse, table.name) == before


def test_a_ttl_is_created_changed_and_removed_with_the_view_setting(clickhouse) -> None:
    name = unique()
    ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N), ("card",), ttl_seconds=86400))
    assert "TTL toDateTime(window_start) + toIntervalSecond(86400)" in engine_full(clickhouse, name)

    statements = ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N), ("card",), ttl_seconds=3600))
    assert statements == [f"ALTER TABLE `{name}` MODIFY TTL toDateTime(window_start) + toIntervalSecond(3600)"]
    assert "toIntervalSecond(3600)" in engine_full(clickhouse, name)
    assert ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N), ("card",), ttl_seconds=3600)) == []

    assert ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N), ("card",))) == [
        f"ALTER TABLE `{name}` REMOVE TTL"]
    assert " TTL " not in engine_full(clickhouse, name)


def test_a_read_of_the_last_minutes_skips_the_older_hours(clickhouse) -> None:
    name = unique()
    ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N), ("card",)))
    clickhouse.command(  # 48 hours x 2,000 cards of one-minute windows, then one recent window
        f"INSERT INTO `{name}` (card, window_start, window_end, n, version, updated_at) "
        "SELECT toString(number % 2000), toDateTime64('2026-01-01 00:00:00', 6, 'UTC') + intDiv(number, 2000) * 60, "
        "toDateTime64('2026-01-01 00:01:00', 6, 'UTC') + intDiv(number, 2000) * 60, 1, 1, now64(3) "
        "FROM numbers(5760000)")
    recent = "window_start >= toDateTime64('2026-01-02 23:45:00', 6, 'UTC')"

    read = clickhouse.rows(f"SELECT count() FROM `{name}` FINAL WHERE {recent} SETTINGS max_rows_to_read = 400000")

    assert read == [(15 * 2000,)]  # TOO_MANY_ROWS if it read more than ~3 of the 48 hours
    one_key = clickhouse.rows(f"SELECT count() FROM `{name}` WHERE card = '7' AND {recent} "
                              "SETTINGS max_rows_to_read = 40000")  # a few granules
    assert one_key == [(15,)]


def test_a_table_of_the_month_partitioned_layout_keeps_working_with_a_warning(clickhouse, caplog) -> None:
    name = unique()
    table = GoldTable.from_schema(name, view_schema(N), ("card",))
    clickhouse.command(table.ddl().replace("PARTITION BY toDate(window_start)", "PARTITION BY toYYYYMM(window_start)")
                       .replace(table.order_by, table.legacy_order_by))

    with caplog.at_level("WARNING"):
        assert ensure_table(clickhouse, table) == []
    assert "RENAME/EXCHANGE" in caplog.text and name in caplog.text


# --------------------------------------------------------------------------- migration

def test_a_new_metric_adds_its_column(clickhouse) -> None:
    name = unique()
    ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N), ("card",)))

    statements = ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N, MEAN, TOTAL), ("card",)))

    assert statements == [f"ALTER TABLE `{name}` ADD COLUMN IF NOT EXISTS `mean` Nullable(Float64)",
                          f"ALTER TABLE `{name}` ADD COLUMN IF NOT EXISTS `total` Nullable(Decimal(22, 2))"]
    found = columns(clickhouse, name)
    assert found["mean"] == "Nullable(Float64)" and found["total"] == "Nullable(Decimal(22, 2))"
    assert ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N, MEAN, TOTAL), ("card",))) == []


def test_a_metric_whose_type_changed_is_a_conflict_naming_table_and_column(clickhouse) -> None:
    name = unique()
    ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N, TOTAL), ("card",)))
    changed = T.StructField("total", T.DoubleType(), True)

    with pytest.raises(SchemaConflict) as raised:
        ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N, changed), ("card",)))

    message = str(raised.value)
    assert f"`{name}`" in message and "`total`" in message
    assert "Nullable(Decimal(22, 2))" in message and "Nullable(Float64)" in message
    assert columns(clickhouse, name)["total"] == "Nullable(Decimal(22, 2))"


@pytest.mark.parametrize("new_keys", [("merchant",), ("card", "country"), ("country", "card")])
def test_changed_group_keys_are_a_conflict_mentioning_group_by(clickhouse, new_keys: tuple[str, ...]) -> None:
    name = unique()
    keys = ("card", "country") if new_keys == ("country", "card") else ("card",)
    ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N, keys=keys), keys))

    with pytest.raises(SchemaConflict, match="group_by") as raised:
        ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N, keys=new_keys), new_keys))
    assert f"`{name}`" in str(raised.value)
    assert set(columns(clickhouse, name)) == {*keys, "window_start", "window_end", "n", "version", "updated_at"}


def test_a_table_with_another_engine_is_a_conflict(clickhouse) -> None:
    name = unique()
    table = GoldTable.from_schema(name, view_schema(N), ("card",))
    clickhouse.command(table.ddl().replace("ReplacingMergeTree(version)", "MergeTree"))

    with pytest.raises(SchemaConflict, match="engine") as raised:
        ensure_table(clickhouse, table)
    assert f"`{name}`" in str(raised.value) and "ReplacingMergeTree(version)" in str(raised.value)


def test_a_table_missing_a_fixed_column_is_a_conflict(clickhouse) -> None:
    """Only metrics are added; a table without window_end cannot be migrated."""
    name = unique()
    table = GoldTable.from_schema(name, view_schema(N), ("card",))
    clickhouse.command(table.ddl().replace(f"`window_end` {UTC64},", ""))

    with pytest.raises(SchemaConflict, match="`window_end`"):
        ensure_table(clickhouse, table)


def test_a_removed_metric_is_kept_and_the_new_shape_still_inserts(clickhouse) -> None:
    name = unique()
    ensure_table(clickhouse, GoldTable.from_schema(name, view_schema(N, TOTAL, MEAN), ("card",)))
    narrower = GoldTable.from_schema(name, view_schema(N, MEAN), ("card",))

    assert ensure_table(clickhouse, narrower) == []
    assert "total" in columns(clickhouse, name)

    start, end = (datetime(2026, 11, 1, 12, m, tzinfo=timezone.utc) for m in (0, 1))
    sink = GoldSink(clickhouse, narrower)
    sink.bind("q-removed")
    sink.write(pa.table({"card": ["c1"], "window_start": pa.array([start], pa.timestamp("us", tz="UTC")),
                         "window_end": pa.array([end], pa.timestamp("us", tz="UTC")),
                         "n": pa.array([3], pa.int64()), "mean": [1.5]}), 0)
    assert clickhouse.rows(f"SELECT card, n, total, mean FROM `{name}` FINAL") == [("c1", 3, None, 1.5)]


def test_a_spark_aggregate_schema_round_trips_through_ensure_table(spark, clickhouse) -> None:
    """The layout of a real Spark aggregate (count non-null, sum nullable) creates a table it matches."""
    from pyspark.sql import functions as F

    frame = (spark.createDataFrame([("c1", datetime(2026, 11, 1, 12, 0), Decimal("1.50"))],
                                   "card string, t timestamp, amount decimal(12,2)")
             .groupBy("card", F.window("t", "1 minute").alias("w"))
             .agg(F.count(F.lit(1)).alias("n"), F.sum("amount").alias("total"))
             .select("card", F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"), "n",
                     "total"))
    table = GoldTable.from_schema(unique(), frame.schema, ("card",))

    ensure_table(clickhouse, table)

    assert columns(clickhouse, table.name) == dict(table.columns)
    assert dict(table.columns)["n"] == "Int64" and dict(table.columns)["total"] == "Nullable(Decimal(22, 2))"
    assert ensure_table(clickhouse, table) == []


def test_an_existing_table_without_the_dedup_window_does_not_lose_exactly_once(clickhouse) -> None:
    """A gold table that exists without ``non_replicated_deduplication_window`` (created before the setting, or
    by hand) drops no replayed insert: ensure_table must add the setting (or refuse the table), else a replayed
    batch is inserted twice. (Fails today: ensure_table accepts the table as it is.)"""
    table = GoldTable.from_schema(unique(), view_schema(N), ("card",))
    clickhouse.command(table.ddl().split("\nSETTINGS")[0])
    assert "non_replicated_deduplication_window" not in clickhouse.rows(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
        {"t": table.name})[0][0]

    try:
        ensure_table(clickhouse, table)
    except SchemaConflict as refused:
        assert "non_replicated_deduplication_window" in str(refused)
        return
    start, end = (datetime(2026, 11, 1, 12, m, tzinfo=timezone.utc) for m in (0, 1))
    batch = pa.table({"card": ["c1", "c2"], "window_start": pa.array([start, start], pa.timestamp("us", tz="UTC")),
                      "window_end": pa.array([end, end], pa.timestamp("us", tz="UTC")),
                      "n": pa.array([1, 2], pa.int64())})
    sink = GoldSink(clickhouse, table)
    sink.bind("q1")
    sink.write(batch, 0)
    sink.write(batch, 0)  # the replay of batch 0
    assert clickhouse.rows(f"SELECT count() FROM `{table.name}`") == [(2,)]
