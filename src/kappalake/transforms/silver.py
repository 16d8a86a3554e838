"""Silver rows: typed payload fields plus their Kafka lineage; dedupe helpers for both silver modes."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from kappalake.config.models import SILVER_LINEAGE

from kappalake.config.models import EventsConfig
from kappalake.transforms.parse import field_column

LINEAGE_COLUMNS = SILVER_LINEAGE


def to_silver(valid: DataFrame, events: EventsConfig) -> DataFrame:
    """Declared fields (typed, in schema order) followed by lineage columns."""
    return valid.select(
        *[F.col(field_column(name)).alias(name) for name in events.schema_],
        F.col("kafka_timestamp"),
        F.col("topic").alias("source_topic"),
        F.col("partition").alias("source_partition"),
        F.col("offset").alias("source_offset"),
    )


def with_dedupe_columns(parsed: DataFrame, id_column: str, time_column: str) -> DataFrame:
    """Add ``_dedupe_id`` (the event id; a per-record id for rejected rows so they never collide)
    and ``_dedupe_time`` (``time_column``, or the Kafka timestamp where it is null)."""
    # A payload field parse_events renamed (see field_column); any other name (kafka_timestamp) as it is.
    id_column, time_column = (field_column(c) if field_column(c) in parsed.columns else c
                              for c in (id_column, time_column))
    record_id = F.concat_ws(":", F.lit("rejected"), F.col("topic"), F.col("partition").cast("string"),
                            F.col("offset").cast("string"))
    valid = F.size(F.col("_errors")) == 0
    return parsed.withColumns({
        "_dedupe_id": F.when(valid, F.col(id_column).cast("string")).otherwise(record_id),
        "_dedupe_time": F.coalesce(F.col(time_column), F.col("kafka_timestamp")),
    })


def dedupe_within_watermark(df: DataFrame, delay: str) -> DataFrame:
    """Streaming dedupe on ``_dedupe_id`` while the watermark on ``_dedupe_time`` keeps the id in state."""
    return df.withWatermark("_dedupe_time", delay).dropDuplicatesWithinWatermark(["_dedupe_id"])


def latest_by_key(df: DataFrame, keys: Sequence[str], sequence: str) -> DataFrame:
    """One row per key: the highest ``sequence`` (ties broken by the latest source offset)."""
    order = Window.partitionBy(*keys).orderBy(F.col(sequence).desc(), F.col("source_offset").desc())
    return df.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") == 1).drop("_rank")
