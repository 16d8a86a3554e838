"""Bronze: the Kafka record exactly as received, plus when kappalake ingested it."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

BRONZE_COLUMNS = ("key", "value", "topic", "partition", "offset", "kafka_timestamp", "kafka_timestamp_type",
                  "headers", "ingest_time", "ingest_date")
PARTITION_COLUMNS = ("ingest_date",)


def to_bronze(kafka_records: DataFrame, ingest_time: Column | None = None) -> DataFrame:
    """Select the Kafka source columns under bronze names and add ``ingest_time``/``ingest_date``.

    Nothing is parsed or filtered: one input row gives one output row.
    """
    ingest = ingest_time if ingest_time is not None else F.current_timestamp()
    headers = (F.col("headers") if "headers" in kafka_records.columns
               else F.lit(None).cast("array<struct<key:string,value:binary>>"))
    return kafka_records.select(
        F.col("key"),
        F.col("value"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.col("timestampType").alias("kafka_timestamp_type"),
        headers.alias("headers"),
        ingest.alias("ingest_time"),
    ).withColumn("ingest_date", F.to_date("ingest_time"))
