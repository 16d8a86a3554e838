"""Spark Kafka source (``format("kafka")``) options built from the pipeline and target config."""

from __future__ import annotations

import json
import os
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
    master = ctx.target.spark.master or ""
    if master.startswith("local") and "minPartitions" not in options:
        # A local run has a few cores and usually fewer Kafka partitions than tasks it could run: split
        # each batch's offset ranges so every core works (measured: ~2x bronze throughput on 2 cores).
        options["minPartitions"] = str(2 * (os.cpu_count() or 2))
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
