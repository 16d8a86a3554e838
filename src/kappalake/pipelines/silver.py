"""Silver job: parse, validate, pseudonymise and dedupe events; rejected records go to the dead-letter table.

One streaming query per pipeline. Append mode dedupes on the event id within the watermark
(``dropDuplicatesWithinWatermark``) and appends; upsert mode MERGEs the latest row per key by the sequence
column; cdc mode applies Debezium changes by key in LSN order (:mod:`.silver_cdc`). All write through
``foreachBatch`` with Delta's txn idempotency, for the silver and the dead-letter table alike. The txn app id
is derived from the streaming query id, which a new checkpoint changes, so a fresh checkpoint's batch 0 is
never mistaken for an old one.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from kappalake.errors import ConfigError
from kappalake.io.delta.batch import append_idempotent, merge_insert_only, merge_latest, table_exists
from kappalake.io.delta.stream import Trigger
from kappalake.io.kafka.admin import TopicSpec, ensure_topics
from kappalake.io.kafka.reader import read_kafka_stream, within_offsets
from kappalake.io.registry.gate import SchemaGate, schema_gate
from kappalake.io.registry.plans import decoder_for
from kappalake.ops import batch_metrics
from kappalake.ops.latency import event_time_quantiles, latency_after_commit
from kappalake.pipelines.bronze import ensure_bronze_table
from kappalake.pipelines.silver_cdc import apply_cdc_batch
from kappalake.pipelines.quality_gate import check_expressions, effective, enforce_or_record, results_path
from kappalake.quality.batch import BatchValidator, metric_counts
from kappalake.quality.results import record_results
from kappalake.quality.rows import CARRIED, VALID, dead_letters, silver_view, split_rows
from kappalake.runtime.binding import QueryBinding
from kappalake.runtime.context import RunContext
from kappalake.transforms.decode_debezium import added_columns
from kappalake.transforms.parse import parse_events
from kappalake.transforms.pii import pseudonymise
from kappalake.transforms.records import records_from_bronze, records_from_kafka
from kappalake.transforms.silver import dedupe_within_watermark, latest_by_key, with_dedupe_columns

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)

#: A dead letter is one source record.
DEAD_LETTER_KEY = ("source_topic", "source_partition", "source_offset")


def pii_key(ctx: RunContext) -> bytes | None:
    """The HMAC key for the configured PII fields, from the environment; refuse to run without it."""
    pii = ctx.pipeline.silver.pii
    if not pii.fields:
        return None
    value = os.environ.get(pii.key_env, "")
    if not value:
        raise ConfigError(
            f"pipeline {ctx.pipeline.name!r} pseudonymises {', '.join(pii.fields)} (silver.pii.fields) but the "
            f"environment variable {pii.key_env} holding the HMAC key is not set; set it (keep it secret and "
            "stable: a new key changes every pseudonym)")
    return value.encode()


class SilverBatchWriter(QueryBinding):
    """The ``foreachBatch`` function of the silver query."""

    def __init__(self, ctx: RunContext, key: bytes | None, gate: SchemaGate | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.key = key
        self.gate = gate
        self.query_name = f"{ctx.pipeline.name}.silver"
        self.quality = effective(ctx.pipeline.silver.expectations, ctx)
        self.validator = BatchValidator(self.quality, self.query_name)

    @property
    def app_id(self) -> str:
        """The txn app id: the query id names this checkpoint's transactions."""
        return f"kappalake:{self.ctx.pipeline.name}:silver:{self.query_id}"

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        pipeline = self.ctx.pipeline
        app_id = self.app_id
        quality = self.quality
        cached = batch.persist()
        try:
            batch = self.gate.resolve(cached, batch_id) if self.gate is not None else cached
            view = silver_view(batch, pipeline.events)
            valid = F.col(VALID)
            # One pass: valid/rejected counts, every expectation's failing rows, event-time quantiles.
            outcome = self.validator.run(view, batch_id, where=valid, extra={
                "event_times": event_time_quantiles(F.when(valid, F.col(pipeline.events.time)))})
            measured = outcome.profile
            enforce_or_record(outcome.results, quality, self.ctx, "silver", app_id, batch_id, batch.sparkSession)
            valid_count = measured.rows - measured.quarantined
            dead_count = measured.skipped + measured.quarantined
            rows = view.where(valid)
            if quality.row_level:
                rows = split_rows(rows, quality)[0]
            if pipeline.silver.mode == "cdc":  # a column the source table gained reaches silver unasked
                rows = added_columns(rows, pipeline.events.schema_)
            rows = rows.drop(*CARRIED)
            if self.key is not None:
                rows = pseudonymise(rows, pipeline.silver.pii.fields, self.key)
            silver_path = self.ctx.table_path("silver")
            if pipeline.silver.mode == "cdc":
                apply_cdc_batch(rows, self.ctx, app_id, batch_id)
            elif pipeline.silver.mode == "upsert":
                assert pipeline.silver.merge_key and pipeline.silver.sequence_column
                merge_latest(latest_by_key(rows, pipeline.silver.merge_key, pipeline.silver.sequence_column),
                             silver_path, pipeline.silver.merge_key, pipeline.silver.sequence_column, app_id,
                             batch_id)
            elif self.ctx.replay:  # a backfill inserts only events the table does not hold yet
                merge_insert_only(rows, silver_path, [pipeline.events.id], app_id, batch_id)
            else:  # columns follow the events schema: a field new in an Avro reader schema is added
                append_idempotent(rows, silver_path, app_id, batch_id, merge_schema=True)
            dead = dead_letters(view, quality, pipeline.name, pipeline.version)
            dlq_path = self.ctx.table_path("dead_letter")
            if self.ctx.replay and dead_count:
                merge_insert_only(dead, dlq_path, DEAD_LETTER_KEY, app_id, batch_id)
            elif dead_count or not table_exists(batch.sparkSession, dlq_path):
                append_idempotent(dead, dlq_path, app_id, batch_id)
            if dead_count and pipeline.dead_letter.kafka_topic:
                publish_dead_letters(dead, self.ctx, pipeline.dead_letter.kafka_topic)
            record_results(batch.sparkSession, outcome.results, results_path(quality, self.ctx), pipeline.name,
                           "silver", app_id, batch_id)
            batch_metrics.add(self.query_name, valid_rows=valid_count, dead_letter_rows=dead_count,
                              **metric_counts(outcome))
            batch_metrics.set_latency(self.query_name, batch_id, **latency_after_commit(measured.extra["event_times"]))
            if dead_count:
                log.warning("%s batch %d: %d records dead-lettered (%d quarantined by expectations)",
                            self.query_name, batch_id, dead_count, measured.quarantined)
        finally:
            cached.unpersist()


def publish_dead_letters(dead: DataFrame, ctx: RunContext, topic: str) -> None:
    """Also send rejected records to a Kafka topic (original key/value, reasons in headers; at-least-once)."""
    headers = F.array(
        F.struct(F.lit("kappalake.error").alias("key"), F.encode("error_message", "UTF-8").alias("value")),
        F.struct(F.lit("kappalake.source").alias("key"), F.encode(F.concat_ws(
            "/", "source_topic", F.col("source_partition").cast("string"), F.col("source_offset").cast("string")),
            "UTF-8").alias("value")),
    )
    options = {k: v for k, v in ctx.kafka_options.items() if k.startswith("kafka.") and k != "kafka.isolation.level"}
    (dead.select("key", "value", headers.alias("headers")).write.format("kafka")
     .options(**options).option("kafka.bootstrap.servers", ctx.bootstrap_servers()).option("topic", topic).save())


def source_records(spark: SparkSession, ctx: RunContext, source: str) -> DataFrame:
    """Records from Kafka (``kafka``) or streamed from the bronze table (``bronze``), within the run's
    offset bounds, without those of registered data subjects (:mod:`kappalake.pipelines.erasure`)."""
    from kappalake.pipelines.erasure import without_erased

    if source == "bronze":
        path = ctx.table_path("bronze")
        ensure_bronze_table(spark, path)
        records = records_from_bronze(spark.readStream.format("delta").load(path))
        if ctx.start_offsets is not None or ctx.end_offsets is not None:
            records = records.where(within_offsets(ctx.start_offsets, ctx.end_offsets))
        return without_erased(spark, ctx, records)
    return without_erased(spark, ctx, records_from_kafka(read_kafka_stream(spark, ctx)))


def start_silver(spark: SparkSession, ctx: RunContext, trigger: Trigger) -> StreamingQuery:
    """Start the silver streaming query for ``ctx.pipeline``."""
    key = pii_key(ctx)
    pipeline = ctx.pipeline
    decoder, schemas = decoder_for(spark, ctx, tombstones=pipeline.silver.mode == "cdc")
    parsed = parse_events(source_records(spark, ctx, pipeline.silver.source), pipeline.events, decoder)
    if pipeline.silver.mode == "append":
        time_column = pipeline.events.time if pipeline.silver.dedupe_time == "event_time" else "kafka_timestamp"
        parsed = dedupe_within_watermark(with_dedupe_columns(parsed, pipeline.events.id, time_column),
                                         pipeline.silver.watermark)
    if pipeline.dead_letter.kafka_topic:
        ensure_topics(ctx.bootstrap_servers(), [TopicSpec(pipeline.dead_letter.kafka_topic, pipeline.source.partitions)],
                      ctx.kafka_options)
    writer = SilverBatchWriter(ctx, key, schema_gate(ctx, schemas, f"{pipeline.name}.silver"))
    check_expressions(silver_view(parsed, pipeline.events), writer.quality, f"{pipeline.name} silver.expectations")
    query = (parsed.writeStream.foreachBatch(writer).queryName(writer.query_name)
             .option("checkpointLocation", ctx.checkpoint_path("silver"))
             .trigger(**trigger.as_kwargs()).start())
    writer.bind(str(query.id))
    return query
