"""Spark Kafka source (``format("kafka")``) options built from the pipeline and target config."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from kappalake.runtime.context import RunContext

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_OPTIONS = {"startingOffsets": "earliest", "failOnDataLoss": "true", "includeHeaders": "true"}


def kafka_source_options(ctx: RunContext) -> dict[str, str]:
    """Every option passed to Spark's Kafka source, with Spark's own names."""
    source = ctx.pipeline.source
    options = dict(DEFAULT_OPTIONS)
    options.update(ctx.target.kafka.options)
    options.update(source.options)
    options["kafka.bootstrap.servers"] = ctx.bootstrap_servers()
    if source.subscribe:
        options["subscribe"] = ",".join(source.subscribe)
    elif source.subscribe_pattern:
        options["subscribePattern"] = source.subscribe_pattern
    elif source.assign:
        options["assign"] = json.dumps(source.assign)
    return options


def read_kafka_stream(spark: SparkSession, ctx: RunContext) -> DataFrame:
    """A streaming DataFrame over the pipeline's topics (Spark's Kafka source schema)."""
    return spark.readStream.format("kafka").options(**kafka_source_options(ctx)).load()
