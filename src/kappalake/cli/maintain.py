"""``kappalake maintain <pipeline>``: compact, vacuum and merge a pipeline's tables (safe next to a live job)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

import typer

from kappalake.cli.common import console, global_options
from kappalake.cli.output import Format, print_table
from kappalake.ops.maintenance import maintain
from kappalake.ops.maintenance.run import check_retention


@contextmanager
def jvm_console_on_stderr() -> Iterator[None]:
    """Start the JVM with stderr as its stdout: Delta prints lines ("Deleted N files ...") to the console,
    which would otherwise land in the report (and break ``--format json``)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


class Only(str, Enum):
    all = "all"
    delta = "delta"
    clickhouse = "clickhouse"


def command(
    ctx: typer.Context,
    pipeline: str = typer.Argument(..., help="Pipeline name."),
    vacuum_retention: str | None = typer.Option(
        None, "--vacuum-retention", help="Override maintenance.vacuum_retention for this run (e.g. '2 days'); "
                                         "refused below maintenance.min_vacuum_retention."),
    only: Only = typer.Option(Only.all, "--only", help="delta: the Delta tables only; clickhouse: the gold tables."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, json (one object per line) or csv."),
) -> None:
    """One maintenance pass: Delta compaction, VACUUM and log retention; ClickHouse part merges. Schedule it
    (every 15-60 minutes) next to the live job; a second run while one is going is refused."""
    run_ctx = global_options(ctx).context(pipeline)
    check_retention(run_ctx, vacuum_retention or run_ctx.pipeline.maintenance.vacuum_retention)  # before any JVM
    spark = ch = None
    if only in (Only.all, Only.clickhouse) and run_ctx.pipeline.gold.views:
        from kappalake.io.clickhouse.client import connect

        ch = connect(run_ctx.target.clickhouse.dsn)
    with jvm_console_on_stderr():
        if only in (Only.all, Only.delta):
            from kappalake.runtime.spark import build_spark

            spark = build_spark(run_ctx.target, app_name=f"kappalake-maintain-{pipeline}")
        report = maintain(run_ctx, spark, ch, vacuum_retention)
    print_table(report.rows, fmt, title=f"{pipeline}: maintenance took {report.seconds:.1f}s",
                columns=("table", "kind", "files", "compaction", "vacuum", "log retention"))
    if not report.rows and fmt is Format.table:
        console.print(f"{pipeline}: no tables yet; nothing to maintain")
