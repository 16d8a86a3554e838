"""Bronze job: Spark's Kafka source -> raw records appended to a Delta table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kappalake.io.delta.stream import Trigger, start_delta_append
from kappalake.io.kafka.reader import read_kafka_stream
from kappalake.runtime.context import RunContext
from kappalake.transforms.bronze import PARTITION_COLUMNS, to_bronze

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery


def start_bronze(spark: SparkSession, ctx: RunContext, trigger: Trigger) -> StreamingQuery:
    """Start the bronze streaming query for ``ctx.pipeline``."""
    ensure_bronze_table(spark, ctx.table_path("bronze"))
    records = read_kafka_stream(spark, ctx)
    return start_delta_append(
        to_bronze(records),
        path=ctx.table_path("bronze"),
        checkpoint=ctx.checkpoint_path("bronze"),
        query_name=f"{ctx.pipeline.name}.bronze",
        trigger=trigger,
        partition_by=PARTITION_COLUMNS,
    )


#: Min/max statistics only where bronze is filtered (coordinates and times), not on payload bytes: halves
#: the cost of writing a batch; row counts are still recorded.
BRONZE_TABLE_PROPERTIES = {"delta.dataSkippingStatsColumns": "topic,partition,offset,kafka_timestamp,ingest_time"}


def ensure_bronze_table(spark: SparkSession, path: str) -> None:
    """Create the (empty, partitioned) bronze table if it does not exist, so readers can start first."""
    from kappalake.io.delta.batch import create_if_missing

    shape = ("key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
             "timestampType int, headers array<struct<key:string,value:binary>>")
    create_if_missing(to_bronze(spark.createDataFrame([], shape)), path, PARTITION_COLUMNS, BRONZE_TABLE_PROPERTIES)
