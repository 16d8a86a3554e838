"""``kappalake maintain``: one pass over a pipeline's Delta tables and gold tables, safe next to a live job.

Per Delta table (bronze, silver, dead letters, late events, quality results): compaction of small files
(skipped while a MERGE writer of it runs on this machine), VACUUM with the configured retention (refused
below the safety margin), and a check of the log retention property: tables a job creates get it; an older
table is only reported, never altered here, because a property change is a metadata commit that fails a
concurrent writer's commit. Per gold view: ClickHouse part merges
(:mod:`~kappalake.ops.maintenance.clickhouse_parts`). One maintenance run per pipeline at a time (a lock in
the data dir; on a scheduler, the job's own max-concurrency setting does it).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from kappalake.config.durations import parse_seconds
from kappalake.errors import ConfigError, MaintenanceRefused
from kappalake.io.delta.batch import table_exists
from kappalake.ops.maintenance import clickhouse_parts, delta_tables
from kappalake.ops.runinfo import running_writers
from kappalake.runtime.context import RunContext

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from kappalake.io.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)

DELTA_TABLES = ("bronze", "silver", "dead_letter", "late_events", "quality_results")
#: Silver's side tables in mode cdc (next to the silver table; :mod:`kappalake.pipelines.silver_cdc`).
CDC_TABLES = ("silver_history", "silver_deletes")
LAYERS = ("bronze", "silver", "gold")
#: Extra time after a view's watermark before its day partition counts as closed.
CLOSE_MARGIN = timedelta(minutes=10)


@dataclass
class MaintenanceReport:
    """What one pass did: a row per table."""

    pipeline: str
    rows: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def check_retention(ctx: RunContext, retention: str) -> float:
    """Seconds of ``retention``; MaintenanceRefused if it is below the pipeline's safety margin."""
    margin = ctx.pipeline.maintenance.min_vacuum_retention
    try:
        seconds = parse_seconds(retention)
    except ValueError as exc:
        raise ConfigError(f"vacuum retention: {exc}") from None
    if seconds < parse_seconds(margin):
        raise MaintenanceRefused(
            f"pipeline {ctx.pipeline.name!r}: a VACUUM retention of {retention} is shorter than the safety margin "
            f"maintenance.min_vacuum_retention ({margin}); files a lagging stream, a running query or a backfill "
            "still reads could be deleted. Use a longer retention, or lower the margin in the pipeline's YAML "
            "if no reader can lag that long")
    return seconds


@contextmanager
def exclusive(ctx: RunContext) -> Iterator[None]:
    """Hold the pipeline's maintenance lock; MaintenanceRefused if another run holds it."""
    ctx.runs_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.runs_dir / "maintain.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise MaintenanceRefused(f"another 'kappalake maintain {ctx.pipeline.name}' is running "
                                     f"(pid {handle.read().strip() or '?'}; lock {path})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def maintain(ctx: RunContext, spark: SparkSession | None, ch: ClickHouse | None,
             vacuum_retention: str | None = None, now: datetime | None = None) -> MaintenanceReport:
    """One maintenance pass; ``spark`` None skips the Delta tables, ``ch`` None the gold tables."""
    retention = vacuum_retention or ctx.pipeline.maintenance.vacuum_retention
    retention_seconds = check_retention(ctx, retention)
    report = MaintenanceReport(ctx.pipeline.name)
    began = time.monotonic()
    with exclusive(ctx):
        running = running_writers(ctx.runs_dir, LAYERS)
        if spark is not None:
            for name in delta_table_names(ctx):
                row = _delta_table(spark, ctx, name, retention_seconds, running)
                if row is not None:
                    report.rows.append(row)
        if ch is not None:
            report.rows += _gold_tables(ch, ctx, now or datetime.now(timezone.utc))
    report.seconds = time.monotonic() - began
    return report


def delta_table_names(ctx: RunContext) -> tuple[str, ...]:
    """The Delta tables a maintenance pass looks after (silver's history and deletes tables in mode cdc)."""
    return DELTA_TABLES + (CDC_TABLES if ctx.pipeline.silver.mode == "cdc" else ())


def table_path(ctx: RunContext, name: str) -> str:
    """Where table ``name`` lives; a cdc side table sits next to silver (``<silver>_history``)."""
    if name in CDC_TABLES:
        return f"{ctx.table_path('silver')}_{name.removeprefix('silver_')}"
    return ctx.table_path(name)


def _merge_writer(ctx: RunContext, name: str, running: dict[str, int]) -> str | None:
    """Who would MERGE into table ``name`` right now (compaction would fail its commit), or None."""
    backfills = [k for k in running if k.startswith("backfill:")]
    if backfills and name in ("bronze", "silver", "dead_letter"):
        return f"{backfills[0]} (pid {running[backfills[0]]}) merges into it"
    if name in ("silver", *CDC_TABLES) and ctx.pipeline.silver.mode in ("upsert", "cdc") and "silver" in running:
        return f"the silver job (pid {running['silver']}) merges into it (mode {ctx.pipeline.silver.mode})"
    return None


def _delta_table(spark: SparkSession, ctx: RunContext, name: str, retention_seconds: float,
                 running: dict[str, int]) -> dict[str, str] | None:
    path = table_path(ctx, name)
    if not table_exists(spark, path):
        return None
    settings = ctx.pipeline.maintenance
    before = delta_tables.table_files(spark, path)
    busy = _merge_writer(ctx, name, running)
    if busy:
        compaction = f"skipped: {busy}"
    elif before.files < settings.compact_min_files:
        compaction = f"not needed ({before.files} files)"
    else:
        removed, added = delta_tables.compact(spark, path, settings.compact_below_mb * 1024 * 1024)
        compaction = f"{removed} small files into {added}" if removed else "no small files to pack"
    delta_tables.vacuum(spark, path, retention_seconds)
    wanted = delta_tables.interval(int(parse_seconds(settings.log_retention)))
    current = delta_tables.log_retention(spark, path)
    log_note = "ok" if current == wanted else (
        f"{current or 'default (30 days)'}, not {settings.log_retention}: set it with the jobs stopped "
        f"(ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('{delta_tables.LOG_RETENTION}' = '{wanted}'))")
    after = delta_tables.table_files(spark, path)
    log.info("maintained %s (%s): %s", name, path, compaction)
    return {"table": name, "kind": "delta", "files": f"{before.files} -> {after.files}",
            "compaction": compaction, "vacuum": f"retain {_hours(retention_seconds)}", "log retention": log_note}


def _gold_tables(ch: ClickHouse, ctx: RunContext, now: datetime) -> list[dict[str, str]]:
    rows = []
    settings = ctx.pipeline.maintenance.clickhouse
    for view in ctx.pipeline.gold.views.values():
        delay = parse_seconds(ctx.pipeline.view_watermark(view))
        size = parse_seconds(view.window.size or view.window.gap or "1 second")
        closed_before = (now - timedelta(seconds=delay + size) - CLOSE_MARGIN).astimezone(timezone.utc)
        for table in (view.clickhouse.table, f"{view.clickhouse.table}_state"):
            if not clickhouse_parts.table_exists(ch, table):
                continue
            before = clickhouse_parts.active_parts(ch, table)
            statements = clickhouse_parts.merge_parts(ch, table, closed_before.replace(tzinfo=None),
                                                      settings.max_parts, settings.final_closed_partitions)
            after = clickhouse_parts.active_parts(ch, table)
            rows.append({"table": table, "kind": "clickhouse", "files": f"{before} -> {after} parts",
                         "compaction": "; ".join(s.split(" PARTITION ID ")[1] for s in statements) or "not needed",
                         "vacuum": "-", "log retention": "-"})
    return rows


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"
