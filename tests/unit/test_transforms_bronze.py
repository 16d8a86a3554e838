"""to_bronze on a small DataFrame shaped like Spark's Kafka source output."""

from __future__ import annotations

from datetime import date, datetime

from chispa import assert_df_equality
from pyspark.sql import functions as F

from kappalake.transforms.bronze import BRONZE_COLUMNS, to_bronze

KAFKA_SCHEMA = ("key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
                "timestampType int, headers array<struct<key:string,value:binary>>")


def test_to_bronze_keeps_every_record_and_byte(spark) -> None:
    records = spark.createDataFrame([
        (b"card-1", b'{"ok":1}', "payments", 0, 10, datetime(2026, 11, 1, 12, 0), 0, [("h", b"v")]),
        (None, b"\xff\xfe not json", "payments", 1, 11, datetime(2026, 11, 1, 12, 1), 0, []),
        (b"card-1", b'{"ok":1}', "payments", 0, 12, datetime(2026, 11, 1, 12, 2), 1, None),
    ], KAFKA_SCHEMA)
    ingest = F.lit(datetime(2026, 11, 2, 8, 30)).cast("timestamp")

    actual = to_bronze(records, ingest_time=ingest)

    expected = spark.createDataFrame([
        (b"card-1", b'{"ok":1}', "payments", 0, 10, datetime(2026, 11, 1, 12, 0), 0, [("h", b"v")],
         datetime(2026, 11, 2, 8, 30), date(2026, 11, 2)),
        (None, b"\xff\xfe not json", "payments", 1, 11, datetime(2026, 11, 1, 12, 1), 0, [],
         datetime(2026, 11, 2, 8, 30), date(2026, 11, 2)),
        (b"card-1", b'{"ok":1}', "payments", 0, 12, datetime(2026, 11, 1, 12, 2), 1, None,
         datetime(2026, 11, 2, 8, 30), date(2026, 11, 2)),
    ], "key binary, value binary, topic string, partition int, offset long, kafka_timestamp timestamp, "
       "kafka_timestamp_type int, headers array<struct<key:string,value:binary>>, ingest_time timestamp, "
       "ingest_date date")
    assert tuple(actual.columns) == BRONZE_COLUMNS
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_to_bronze_without_headers_column(spark) -> None:
    records = spark.createDataFrame(
        [(b"k", b"v", "t", 0, 1, datetime(2026, 1, 1), 0)],
        "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, timestampType int")
    row = to_bronze(records).collect()[0]
    assert row["headers"] is None and row["ingest_date"] == row["ingest_time"].date()
