"""One shape for source records, whether they come from Kafka directly or from the bronze table."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

RECORD_COLUMNS = ("key", "value", "topic", "partition", "offset", "kafka_timestamp")


def records_from_kafka(kafka_records: DataFrame) -> DataFrame:
    """Spark's Kafka source columns -> the record shape."""
    return kafka_records.select("key", "value", "topic", "partition", "offset",
                                F.col("timestamp").alias("kafka_timestamp"))


def records_from_bronze(bronze: DataFrame) -> DataFrame:
    """Bronze table columns -> the record shape."""
    return bronze.select(*RECORD_COLUMNS)
