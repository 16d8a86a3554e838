"""Right to erasure in the jobs: the erasure register and the filter every job applies.

The register (``<root>/<pipeline>/erasure_register``, Delta) holds one row per request: the subject field,
the HMAC of its value under the pipeline's PII key (never the value), when and why it was filed, where from
(``cli`` or ``topic``), and when each layer was cleaned.

- Every job reads its records through :func:`without_erased` (a stream-static join with the register: each
  micro-batch reads the register's latest version, so a new request applies without a restart).
- A live run reads the requests published on ``<pipeline>.forget`` into the register
  (:func:`start_control_query`, with ``erasure.control_topic``).

``kappalake forget`` files requests and deletes the subjects' rows with :mod:`kappalake.ops.erasure`, and
purges them with :mod:`kappalake.ops.erasure_purge`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import TYPE_CHECKING, Any

from kappalake.errors import ConfigError
from kappalake.io.delta.batch import create_if_missing
from kappalake.runtime.context import RunContext

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

REGISTER = "erasure_register"
#: Register columns recording when each layer was cleaned.
DONE_COLUMNS = {"silver": "silver_done_at", "dead_letter": "dead_letter_done_at",
                "late_events": "late_events_done_at", "bronze": "bronze_done_at", "clickhouse": "clickhouse_done_at"}


def require_erasure(ctx: RunContext) -> None:
    if not ctx.pipeline.erasure.enabled:
        raise ConfigError(f"pipeline {ctx.pipeline.name!r} configures no data subjects: add an 'erasure:' section "
                          "with subject_fields (e.g. [card_id]) to its YAML")


def hmac_key(ctx: RunContext) -> bytes:
    """The pipeline's PII key (the pseudonyms of silver and gold are HMACs under it)."""
    from kappalake.pipelines.silver import pii_key

    key = pii_key(ctx)
    if key is None:  # check_erasure makes every subject field a PII field, so this means no subject fields
        require_erasure(ctx)
        raise ConfigError(f"pipeline {ctx.pipeline.name!r}: no PII key")
    return key


def pseudonym(key: bytes, value: str) -> str:
    """The HMAC silver gives ``value`` (hex)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def check_subject(ctx: RunContext, field_name: str) -> None:
    require_erasure(ctx)
    erasure = ctx.pipeline.erasure
    if field_name not in ctx.pipeline.events.schema_:
        raise ConfigError(f"pipeline {ctx.pipeline.name!r} has no field {field_name!r} (events.schema: "
                          f"{', '.join(ctx.pipeline.events.schema_)})")
    if field_name not in erasure.subject_fields:
        raise ConfigError(f"{field_name!r} is not a subject field of pipeline {ctx.pipeline.name!r} (erasure."
                          f"subject_fields: {', '.join(erasure.subject_fields)})")


def register_path(ctx: RunContext) -> str:
    return ctx.table_path(REGISTER)


def control_topic(ctx: RunContext) -> str:
    return f"{ctx.pipeline.name}.forget"


def ensure_register(spark: SparkSession, ctx: RunContext) -> str:
    from kappalake.transforms.erasure import REGISTER_SCHEMA

    path = register_path(ctx)
    create_if_missing(spark.createDataFrame([], REGISTER_SCHEMA), path)
    return path


# --------------------------------------------------------------------------- filtering in every job

def without_erased(spark: SparkSession, ctx: RunContext, records: DataFrame,
                   time_column: str = "kafka_timestamp") -> DataFrame:
    """``records`` (with binary ``key``/``value``) without those of registered subjects; the count is the
    observed metric ``erasure`` (``erased_rows``) of the query's progress. Unchanged when no subject field is
    configured."""
    from kappalake.transforms.erasure import drop_erased

    import os

    if not ctx.pipeline.erasure.enabled:
        return records
    register = spark.read.format("delta").load(ensure_register(spark, ctx))
    if not os.environ.get(ctx.pipeline.silver.pii.key_env):
        # Only a bronze-only job gets here (silver and gold refuse to run without the key): without the key no
        # subject can be matched, so it may run only while nobody is registered.
        if register.limit(1).count():
            raise ConfigError(f"pipeline {ctx.pipeline.name!r} has erasure requests but the environment variable "
                              f"{ctx.pipeline.silver.pii.key_env} holding the PII key is not set: registered "
                              "subjects cannot be recognised. Set it before starting the job")
        log.warning("%s: %s is not set; the erasure register is empty, so no records are filtered by it until "
                    "the job restarts with the key", ctx.pipeline.name, ctx.pipeline.silver.pii.key_env)
        return records
    return drop_erased(records, register, ctx.pipeline.erasure, ctx.pipeline.events, hmac_key(ctx), time_column,
                       observe="erasure")


# --------------------------------------------------------------------------- control topic

class ControlWriter:
    """``foreachBatch`` of the control-topic query: valid requests -> register rows (HMAC only), each subject
    once. A record that is not a JSON object with a configured ``field`` and a ``value`` is logged and skipped."""

    def __init__(self, ctx: RunContext, key: bytes, path: str, query_name: str) -> None:
        self.ctx = ctx
        self.key = key
        self.path = path
        self.query_name = query_name
        self.query_id = "unbound"

    def bind(self, query_id: str) -> None:
        self.query_id = query_id

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        from kappalake.io.delta.batch import append_idempotent
        from kappalake.ops import batch_metrics
        from kappalake.transforms.pii import hmac_sha256

        text = F.col("value").cast("string")
        parsed = batch.select(F.get_json_object(text, "$.field").alias("subject_field"),
                              F.get_json_object(text, "$.value").alias("_value"),
                              F.get_json_object(text, "$.reason").alias("reason"),
                              F.col("timestamp").alias("requested_at"))
        fields = list(self.ctx.pipeline.erasure.subject_fields)
        valid = parsed.where(F.col("subject_field").isin(fields) & F.col("_value").isNotNull()
                             & (F.length("_value") > 0)).persist()
        try:
            total, accepted = batch.count(), valid.count()
            if total > accepted:
                log.warning("%s batch %d: %d records are not erasure requests ({\"field\": one of %s, \"value\": ..., "
                            "\"reason\": ...}); skipped", self.query_name, batch_id, total - accepted, fields)
            known = batch.sparkSession.read.format("delta").load(self.path).select("subject_field", "subject_hmac")
            rows = (valid.withColumn("subject_hmac", hmac_sha256(F.col("_value"), self.key)).drop("_value")
                    .groupBy("subject_field", "subject_hmac")
                    .agg(F.min("requested_at").alias("requested_at"), F.first("reason").alias("reason"))
                    .join(known, ["subject_field", "subject_hmac"], "left_anti")
                    .select(F.expr("replace(uuid(), '-', '')").alias("request_id"), "subject_field", "subject_hmac",
                            "requested_at", F.coalesce("reason", F.lit("")).alias("reason"),
                            F.lit("topic").alias("source"),
                            *[F.lit(None).cast("timestamp").alias(c) for c in (*DONE_COLUMNS.values(), "purged_at")]))
            append_idempotent(rows, self.path, f"kappalake:{self.ctx.pipeline.name}:forget:{self.query_id}", batch_id)
            batch_metrics.add(self.query_name, erasure_requests=accepted)
        finally:
            valid.unpersist()


def start_control_query(spark: SparkSession, ctx: RunContext, trigger: Any, layers: tuple[str, ...]) -> Any:
    """Start the query reading erasure requests from ``<pipeline>.forget`` (live runs with a processing-time
    trigger and ``erasure.control_topic`` only; a drain run or a backfill leaves the topic to the next live
    run). Returns the query, or None."""
    from kappalake.io.kafka.admin import TopicSpec, ensure_topics

    erasure = ctx.pipeline.erasure
    if not erasure.enabled or not erasure.control_topic or ctx.replay or trigger.available_now:
        return None
    topic = control_topic(ctx)
    ensure_topics(ctx.bootstrap_servers(), [TopicSpec(topic, 1)], ctx.kafka_options)
    path = ensure_register(spark, ctx)
    options = {k: v for k, v in ctx.kafka_options.items() if k.startswith("kafka.")}
    source = (spark.readStream.format("kafka").options(**options)
              .option("kafka.bootstrap.servers", ctx.bootstrap_servers()).option("subscribe", topic)
              .option("startingOffsets", "earliest").option("failOnDataLoss", "false").load())
    name = f"{ctx.pipeline.name}.forget"
    writer = ControlWriter(ctx, hmac_key(ctx), path, name)
    # One checkpoint per set of layers: jobs of other layers run in other processes with their own.
    query = (source.writeStream.foreachBatch(writer).queryName(name)
             .option("checkpointLocation", ctx.checkpoint_path("forget", run="-".join(layers)))
             .trigger(**trigger.as_kwargs()).start())
    writer.bind(str(query.id))
    return query
