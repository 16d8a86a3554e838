"""Right to erasure: the erasure register, the filter every job applies, and ``kappalake forget``'s deletes.

The register (``<root>/<pipeline>/erasure_register``, Delta) holds one row per request: the subject field,
the HMAC of its value under the pipeline's PII key (never the value), when and why it was filed, where from
(``cli`` or ``topic``), and when each layer was cleaned.

- Every job reads its records through :func:`without_erased` (a stream-static join with the register: each
  micro-batch reads the register's latest version, so a new request applies without a restart).
- :func:`apply_requests` deletes the subjects' existing rows: Delta MERGE ... WHEN MATCHED DELETE on silver,
  the dead letters, the late events (live and backfill runs) and bronze; ClickHouse mutations on the gold views
  configured ``delete``. The commits name no subject: the rows to delete are joined from a DataFrame, so
  neither the pseudonym nor the key-derived HMAC pads appear in a commit's predicate.
- :func:`purge` (no job may run) rewrites deletion vectors away (``REORG TABLE ... APPLY (PURGE)``), VACUUMs
  with ``erasure.purge_retention`` and scrubs the subjects' pseudonyms from the statistics of the
  transaction log (:mod:`kappalake.io.delta.scrub`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kappalake.config.erasure import retention_seconds
from kappalake.errors import ConfigError, MaintenanceRefused
from kappalake.io.delta.batch import create_if_missing, table_exists
from kappalake.runtime.context import RunContext

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from kappalake.io.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)

REGISTER = "erasure_register"
#: Register columns recording when each layer was cleaned.
DONE_COLUMNS = {"silver": "silver_done_at", "dead_letter": "dead_letter_done_at",
                "late_events": "late_events_done_at", "bronze": "bronze_done_at", "clickhouse": "clickhouse_done_at"}
STATUS_COLUMNS = ("request_id", "subject_field", "subject_hmac", "requested_at", "source", "reason", "pending",
                  "purged_at")
_JOB_LAYERS = ("bronze", "silver", "gold")


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


# --------------------------------------------------------------------------- requests

@dataclass(frozen=True)
class Request:
    request_id: str
    subject_field: str
    subject_hmac: str
    requested_at: datetime
    new: bool


def file_request(spark: SparkSession, ctx: RunContext, field_name: str, value: str, reason: str | None,
                 source: str = "cli") -> Request:
    """Record an erasure request (the value only as its HMAC); an already registered subject is not added twice."""
    from pyspark.sql import functions as F

    from kappalake.transforms.erasure import REGISTER_SCHEMA

    check_subject(ctx, field_name)
    digest = pseudonym(hmac_key(ctx), value)
    path = ensure_register(spark, ctx)
    existing = (spark.read.format("delta").load(path)
                .where((F.col("subject_field") == field_name) & (F.col("subject_hmac") == digest))
                .orderBy("requested_at").first())
    if existing is not None:
        return Request(existing["request_id"], field_name, digest, existing["requested_at"], new=False)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    request = Request(uuid.uuid4().hex, field_name, digest, now, new=True)
    row = (request.request_id, field_name, digest, now, reason or "", source, None, None, None, None, None, None)
    spark.createDataFrame([row], REGISTER_SCHEMA).write.format("delta").mode("append").save(path)
    return request


def read_register(spark: SparkSession, ctx: RunContext) -> list[dict[str, Any]]:
    path = register_path(ctx)
    if not table_exists(spark, path):
        return []
    return [row.asDict() for row in spark.read.format("delta").load(path).orderBy("requested_at").collect()]


def status_rows(ctx: RunContext) -> list[dict[str, Any]]:
    """The register without Spark (delta-rs): one row per request with its pending layers."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    require_erasure(ctx)
    try:
        table = DeltaTable(register_path(ctx))
    except TableNotFoundError:
        return []
    rows = sorted(table.to_pyarrow_table().to_pylist(), key=lambda r: (r["requested_at"] or datetime.min))
    for row in rows:
        row["pending"] = ", ".join(layer for layer, column in DONE_COLUMNS.items() if row.get(column) is None) \
            or ("purge" if row.get("purged_at") is None else "none")
    return rows


# --------------------------------------------------------------------------- deleting existing rows

@dataclass
class ApplyReport:
    """Rows deleted per table, by one :func:`apply_requests`."""

    deleted: dict[str, int] = field(default_factory=dict)
    requests: int = 0


def _subjects(spark: SparkSession, requests: list[dict[str, Any]], field_name: str) -> DataFrame:
    rows = [(r["subject_hmac"], r["requested_at"]) for r in requests if r["subject_field"] == field_name]
    return spark.createDataFrame(rows, "subject_hmac string, requested_at timestamp").groupBy("subject_hmac").agg(
        {"requested_at": "min"}).withColumnRenamed("min(requested_at)", "requested_at")


def _merge_delete(spark: SparkSession, path: str, source: DataFrame, condition: str) -> int:
    """MERGE the table at ``path`` with ``source`` (alias s), deleting matched rows; retried on a concurrent
    append (a live job may be writing). Returns the rows deleted."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    target = spark.read.format("delta").load(path).alias("t")
    if not target.join(source.alias("s"), F.expr(condition), "left_semi").limit(1).count():
        return 0  # nothing to delete: no commit
    for attempt in range(5):
        try:
            DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), condition).whenMatchedDelete().execute()
            break
        except Exception as exc:  # noqa: BLE001 - Delta's concurrency errors arrive as Py4J/captured exceptions
            if "Concurrent" not in str(exc) or attempt == 4:
                raise
            time.sleep(1 + attempt)
    metrics = DeltaTable.forPath(spark, path).history(1).select("operation", "operationMetrics").first()
    if metrics is None or metrics["operation"] != "MERGE":
        return 0
    return int((metrics["operationMetrics"] or {}).get("numTargetRowsDeleted", 0))


def _kept_after(erasure_keep: bool, time_expr: str) -> str:
    """With ``seen_again: keep`` only rows produced up to the request are the subject's to forget."""
    return f" AND {time_expr} <= s.requested_at" if erasure_keep else ""


def _record_matches(spark: SparkSession, ctx: RunContext, path: str, requests: list[dict[str, Any]],
                    keys: tuple[str, ...], time_column: str) -> DataFrame:
    """Coordinates ``keys`` of the raw records (binary key/value) at ``path`` that belong to a registered
    subject (computed in a query, so the HMAC key never reaches a commit)."""
    from kappalake.transforms.erasure import ERASED, mark_erased

    register = spark.createDataFrame(
        [(r["subject_field"], r["subject_hmac"], r["requested_at"]) for r in requests],
        "subject_field string, subject_hmac string, requested_at timestamp")
    marked = mark_erased(spark.read.format("delta").load(path), register, ctx.pipeline.erasure, ctx.pipeline.events,
                         hmac_key(ctx), time_column)
    from pyspark.sql import functions as F

    return marked.where(F.col(ERASED)).select(*keys).distinct()


def late_event_tables(spark: SparkSession, ctx: RunContext) -> list[str]:
    """The live late-events table and those of gold backfill runs."""
    from kappalake.io import hadoopfs

    paths = [ctx.table_path("late_events")]
    runs = f"{ctx.target.storage.root.rstrip('/')}/{ctx.pipeline.name}/_runs"
    paths += [f"{runs}/{name}/late_events" for name in sorted(hadoopfs.list_names(spark, runs))]
    return [p for p in paths if table_exists(spark, p)]


def delta_tables(spark: SparkSession, ctx: RunContext) -> list[tuple[str, str]]:
    """(layer, path) of every existing Delta table that can hold a subject."""
    tables = [(layer, ctx.table_path(layer)) for layer in ("silver", "dead_letter", "bronze")]
    tables = [(layer, path) for layer, path in tables if table_exists(spark, path)]
    return tables + [("late_events", path) for path in late_event_tables(spark, ctx)]


def apply_requests(spark: SparkSession, ctx: RunContext, ch: ClickHouse | None,
                   only: list[str] | None = None) -> ApplyReport:
    """Delete the registered subjects' rows from every table (all requests, or the ids in ``only``) and stamp
    the register's per-layer completion times."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    require_erasure(ctx)
    requests = [r for r in read_register(spark, ctx) if only is None or r["request_id"] in only]
    report = ApplyReport(requests=len(requests))
    if not requests:
        return report
    erasure = ctx.pipeline.erasure
    keep = erasure.seen_again == "keep"
    done: set[str] = set()
    for layer, path in delta_tables(spark, ctx):
        began = time.monotonic()
        deleted = 0
        if layer in ("silver", "late_events"):
            for field_name in erasure.subject_fields:
                subjects = _subjects(spark, requests, field_name)
                if layer == "silver":
                    target = f"t.`{field_name}`"
                    when = _kept_after(keep, "t.kafka_timestamp")
                else:
                    target = f"get_json_object(t.event, '$.{field_name}')"
                    when = _kept_after(keep, "CAST(get_json_object(t.event, '$.kafka_timestamp') AS TIMESTAMP)")
                deleted += _merge_delete(spark, path, subjects, f"{target} = s.subject_hmac{when}")
        else:
            keys = ("topic", "partition", "offset") if layer == "bronze" else (
                "source_topic", "source_partition", "source_offset")
            matches = _record_matches(spark, ctx, path, requests, keys, "kafka_timestamp").persist()
            try:
                if matches.limit(1).count():
                    deleted += _merge_delete(spark, path, matches,
                                             " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys))
            finally:
                matches.unpersist()
        report.deleted[path] = deleted
        done.add(layer)
        log.info("erasure: %d rows deleted from %s in %.1f s", deleted, path, time.monotonic() - began)
    done |= {"silver", "dead_letter", "late_events", "bronze"}  # a table that does not exist holds nobody
    if ch is not None:
        report.deleted.update(delete_gold(ch, ctx, requests))
        done.add("clickhouse")
    elif not ctx.pipeline.gold.views:
        done.add("clickhouse")
    ids = [r["request_id"] for r in requests]
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    DeltaTable.forPath(spark, register_path(ctx)).update(
        F.col("request_id").isin(ids),
        {DONE_COLUMNS[layer]: F.coalesce(F.col(DONE_COLUMNS[layer]), F.lit(now)) for layer in sorted(done)})
    return report


def delete_gold(ch: ClickHouse, ctx: RunContext, requests: list[dict[str, Any]]) -> dict[str, int]:
    """Delete the subjects' rows from the gold views configured ``delete`` (public and state tables). The
    pseudonyms go through a scratch table, so the mutation's text names none of them."""
    from kappalake.ops.maintenance.clickhouse_parts import table_exists as ch_table_exists

    erasure = ctx.pipeline.erasure
    deleted: dict[str, int] = {}
    scratch = f"kappalake_erasure_{uuid.uuid4().hex[:12]}"
    ch.command(f"CREATE TABLE `{scratch}` (subject_field String, subject_hmac String) ENGINE = Memory")
    try:
        import pyarrow as pa

        ch.insert_arrow(scratch, pa.table({"subject_field": [r["subject_field"] for r in requests],
                                           "subject_hmac": [r["subject_hmac"] for r in requests]}))
        for name, view in ctx.pipeline.gold.views.items():
            if erasure.view_action(name, view.group_by) != "delete":
                continue
            column = erasure.subject_of_view(view.group_by)
            assert column is not None
            for table in (view.clickhouse.table, f"{view.clickhouse.table}_state"):
                if not ch_table_exists(ch, table):
                    continue
                where = (f"`{column}` IN (SELECT subject_hmac FROM `{scratch}` WHERE subject_field = '{column}')")
                before = ch.rows(f"SELECT count() FROM `{table}` WHERE {where}")[0][0]
                if before:
                    ch.command(f"ALTER TABLE `{table}` DELETE WHERE {where}", settings={"mutations_sync": 2})
                deleted[f"clickhouse:{table}"] = int(before)
    finally:
        ch.command(f"DROP TABLE IF EXISTS `{scratch}`")
    return deleted


# --------------------------------------------------------------------------- purge

def refuse_while_running(ctx: RunContext) -> None:
    """MaintenanceRefused when a job (live or backfill) of the pipeline runs on this machine."""
    from kappalake.ops.runinfo import running_writers

    running = running_writers(ctx.runs_dir, _JOB_LAYERS)
    if running:
        who = ", ".join(f"{name} (pid {pid})" for name, pid in running.items())
        raise MaintenanceRefused(
            f"pipeline {ctx.pipeline.name!r}: cannot purge while its jobs hold the tables ({who}): the purge "
            "rewrites the tables and VACUUMs files a running batch may still write. Stop the jobs "
            "('kappalake forget' without --purge deletes rows safely next to them), then purge")


_LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


@contextmanager
def few_listing_tasks(spark: SparkSession) -> Iterator[None]:
    """VACUUM lists a table's files in ``parallelPartitionDiscovery.parallelism`` tasks (default 10000: over a
    minute per small table on 2 cores); a few per core are plenty for the tables of one pipeline."""
    before = spark.conf.get(_LISTING_PARALLELISM, None)
    spark.conf.set(_LISTING_PARALLELISM, str(max(2, 2 * spark.sparkContext.defaultParallelism)))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(_LISTING_PARALLELISM)
        else:
            spark.conf.set(_LISTING_PARALLELISM, before)


@dataclass
class PurgeReport:
    apply: ApplyReport
    tables: list[dict[str, Any]] = field(default_factory=list)


def purge(spark: SparkSession, ctx: RunContext, ch: ClickHouse | None, retention: str | None = None) -> PurgeReport:
    """Apply every request again, then remove the deleted rows' files for good: REORG ... APPLY (PURGE) where
    deletion vectors are enabled, VACUUM with the erasure retention, and scrub the pseudonyms from the log."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from kappalake.io.delta import scrub
    from kappalake.ops.maintenance.delta_tables import vacuum
    from kappalake.ops.maintenance.run import exclusive

    require_erasure(ctx)
    text = retention or ctx.pipeline.erasure.purge_retention
    try:
        seconds = retention_seconds(text)
    except ValueError as exc:
        raise ConfigError(f"--retention: {exc}") from None
    refuse_while_running(ctx)
    with exclusive(ctx):
        refuse_while_running(ctx)
        applied = apply_requests(spark, ctx, ch)
        report = PurgeReport(applied)
        requests = read_register(spark, ctx)
        tokens = scrub.tokens_of([r["subject_hmac"] for r in requests])
        for layer, path in delta_tables(spark, ctx):
            began = time.monotonic()
            properties = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["properties"] or {}
            reorg = str(properties.get("delta.enableDeletionVectors", "false")).lower() == "true"
            if reorg:
                spark.sql(f"REORG TABLE delta.`{path}` APPLY (PURGE)")
            with few_listing_tasks(spark):
                vacuum(spark, path, seconds)
            vacuumed = time.monotonic()
            scrubbed = scrub.scrub_log(path, tokens)
            log.info("erasure: purged %s (%s): rewrite and vacuum %.1f s, log scrub %.1f s", path, scrubbed,
                     vacuumed - began, time.monotonic() - vacuumed)
            report.tables.append({"table": layer, "path": path, "deleted": applied.deleted.get(path, 0),
                                  "reorg": "purged" if reorg else "no deletion vectors",
                                  "vacuum": f"retain {text}", "log": scrubbed})
        for name, rows in applied.deleted.items():
            if name.startswith("clickhouse:"):
                report.tables.append({"table": name, "path": "", "deleted": rows, "reorg": "mutation",
                                      "vacuum": "-", "log": "-"})
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        if requests:
            DeltaTable.forPath(spark, register_path(ctx)).update(F.lit(True), {"purged_at": F.lit(now)})
        with few_listing_tasks(spark):
            vacuum(spark, register_path(ctx), seconds)  # the register's own old versions
    return report
