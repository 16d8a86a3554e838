"""Shape rejected records for the dead-letter table: original bytes, source coordinates, reasons."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

DEAD_LETTER_COLUMNS = ("key", "value", "source_topic", "source_partition", "source_offset", "kafka_timestamp",
                       "error_class", "error_message", "failed_rules", "pipeline", "pipeline_version", "layer",
                       "failed_at", "replayed_at")


def to_dead_letter(rejected: DataFrame, pipeline: str, version: str, layer: str = "silver",
                   failed_at: Column | None = None) -> DataFrame:
    """Rows with ``_errors`` -> dead-letter rows (one per rejected record, never fewer)."""
    when = failed_at if failed_at is not None else F.current_timestamp()
    return rejected.select(
        F.col("key"),
        F.col("value"),
        F.col("topic").alias("source_topic"),
        F.col("partition").alias("source_partition"),
        F.col("offset").alias("source_offset"),
        F.col("kafka_timestamp"),
        F.col("_errors")[0]["rule"].alias("error_class"),
        F.array_join(F.transform("_errors", lambda e: e["message"]), "; ").alias("error_message"),
        F.transform("_errors", lambda e: F.concat_ws(":", e["rule"], e["field"])).alias("failed_rules"),
        F.lit(pipeline).alias("pipeline"),
        F.lit(version).alias("pipeline_version"),
        F.lit(layer).alias("layer"),
        when.alias("failed_at"),
        F.lit(None).cast("timestamp").alias("replayed_at"),
    )
