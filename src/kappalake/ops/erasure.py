"""``kappalake forget``'s requests and deletes: file a request in the erasure register, list the register,
and delete the registered subjects' existing rows.

- :func:`file_request` records a request (the value only as its HMAC under the pipeline's PII key);
  :func:`status_rows` lists the requests and the layers still pending.
- :func:`apply_requests` deletes the subjects' existing rows: Delta MERGE ... WHEN MATCHED DELETE on silver,
  the dead letters, the late events (live and backfill runs) and bronze; ClickHouse mutations on the gold views
  configured ``delete``. The commits name no subject: the rows to delete are joined from a DataFrame, so
  neither the pseudonym nor the key-derived HMAC pads appear in a commit's predicate.

The register itself and the filter every job applies are in :mod:`kappalake.pipelines.erasure`; the purge
(:mod:`kappalake.ops.erasure_purge`) removes the deleted rows' files for good.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kappalake.io.delta.batch import table_exists
from kappalake.pipelines.erasure import (
    DONE_COLUMNS,
    check_subject,
    ensure_register,
    hmac_key,
    pseudonym,
    register_path,
    require_erasure,
)
from kappalake.runtime.context import RunContext

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from kappalake.io.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)

STATUS_COLUMNS = ("request_id", "subject_field", "subject_hmac", "requested_at", "source", "reason", "pending",
                  "purged_at")


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

