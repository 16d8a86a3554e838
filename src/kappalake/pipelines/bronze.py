"""Bronze job: Spark's Kafka source -> raw records appended to a Delta table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kappalake.io.delta.batch import merge_insert_only
from kappalake.io.delta.stream import Trigger, start_delta_append
from kappalake.io.kafka.reader import read_kafka_stream
from kappalake.runtime.binding import QueryBinding
from kappalake.runtime.context import RunContext
from kappalake.transforms.bronze import PARTITION_COLUMNS, to_bronze

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery


class BronzeReplayWriter(QueryBinding):
    """``foreachBatch`` of a bronze backfill: insert only records (topic, partition, offset) the table
    does not hold yet, idempotent per batch."""

    KEY = ("topic", "partition", "offset")

    def __init__(self, ctx: RunContext) -> None:
        super().__init__()
        self.ctx = ctx

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        bounds = batch.agg(F.min("offset").alias("low"), F.max("offset").alias("high")).first()
        if bounds is None or bounds["low"] is None:
            return
        prune = f"t.`offset` BETWEEN {int(bounds['low'])} AND {int(bounds['high'])}"
        merge_insert_only(batch, self.ctx.table_path("bronze"), self.KEY,
                          f"kappalake:{self.ctx.pipeline.name}:bronze:{self.query_id}", batch_id, prune)


def start_bronze(spark: SparkSession, ctx: RunContext, trigger: Trigger) -> StreamingQuery:
    """Start the bronze streaming query for ``ctx.pipeline`` (a backfill MERGEs instead of appending)."""
    ensure_bronze_table(spark, ctx.table_path("bronze"))
    from kappalake.pipelines.erasure import without_erased  # registered data subjects never reach bronze

    records = without_erased(spark, ctx, read_kafka_stream(spark, ctx), "timestamp")
    if ctx.replay:
        writer = BronzeReplayWriter(ctx)
        query = (to_bronze(records).writeStream.foreachBatch(writer).queryName(f"{ctx.pipeline.name}.bronze")
                 .option("checkpointLocation", ctx.checkpoint_path("bronze"))
                 .trigger(**trigger.as_kwargs()).start())
        writer.bind(str(query.id))
        return query
    return start_delta_append(
        to_bronze(records),
        path=ctx.table_path("bronze"),
        checkpoint=ctx.checkpoint_path("bronze"),
        query_name=f"{ctx.pipeline.name}.bronze",
        trigger=trigger,
        partition_by=PARTITION_COLUMNS,
    )


#: Bronze table properties (set when the table is created).
#: - Delta min/max statistics only on the coordinates and times bronze is filtered by (replays prune by
#:   offset), not on payload bytes nor on ``topic`` (a per-row string compare and copy, and one micro-batch's
#:   files mix the subscribed topics anyway); row counts are still recorded.
#: - Parquet writes ``value`` (unique payload bytes) without a dictionary and without page min/max
#:   statistics: both cost CPU per record and buy nothing for opaque payloads. Delta passes table
#:   properties to the Parquet writer, so these apply to every file bronze writes.
BRONZE_TABLE_PROPERTIES = {
    "delta.dataSkippingStatsColumns": "partition,offset,kafka_timestamp,ingest_time",
    "parquet.enable.dictionary#value": "false",
    "parquet.column.statistics.enabled#value": "false",
}


def ensure_bronze_table(spark: SparkSession, path: str) -> None:
    """Create the (empty, partitioned) bronze table if it does not exist, so readers can start first."""
    from kappalake.io.delta.batch import create_if_missing

    shape = ("key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
             "timestampType int, headers array<struct<key:string,value:binary>>")
    create_if_missing(to_bronze(spark.createDataFrame([], shape)), path, PARTITION_COLUMNS, BRONZE_TABLE_PROPERTIES)
