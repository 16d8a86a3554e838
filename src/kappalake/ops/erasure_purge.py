"""``kappalake forget --purge``: remove the erased subjects' rows for good, with no job running.

:func:`purge` applies every request again (:func:`kappalake.ops.erasure.apply_requests`), rewrites deletion
vectors away (``REORG TABLE ... APPLY (PURGE)``), VACUUMs with ``erasure.purge_retention`` and scrubs the
subjects' pseudonyms from the statistics of the transaction log (:mod:`kappalake.io.delta.scrub`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kappalake.config.erasure import retention_seconds
from kappalake.errors import ConfigError, MaintenanceRefused
from kappalake.ops.erasure import ApplyReport, apply_requests, delta_tables, read_register
from kappalake.pipelines.erasure import register_path, require_erasure
from kappalake.runtime.context import RunContext

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from kappalake.io.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)

_JOB_LAYERS = ("bronze", "silver", "gold")


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
