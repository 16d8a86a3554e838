"""``kappalake quality <pipeline>``: the last data-quality validation results, as a table."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from kappalake.cli.common import console, global_options
from kappalake.pipelines.quality_gate import RESULTS_TABLE
from kappalake.runtime.context import RunContext


def results_paths(run_ctx: RunContext) -> list[str]:
    """The default results table and any ``results_path`` a table's expectations configure."""
    pipeline = run_ctx.pipeline
    configs = [pipeline.silver.expectations, *(view.expectations for view in pipeline.gold.views.values())]
    paths = [run_ctx.table_path(RESULTS_TABLE)]
    paths += [c.results_path for c in configs if c.results_path]
    return list(dict.fromkeys(paths))


def _existing(path: str) -> bool:
    from deltalake import DeltaTable

    try:
        return bool(DeltaTable.is_deltatable(path))
    except Exception:
        return False


def command(
    ctx: typer.Context,
    pipeline: str = typer.Argument(..., help="Pipeline name."),
    limit: int = typer.Option(50, min=1, help="Results to show (newest first)."),
    failed: bool = typer.Option(False, "--failed", help="Only failed expectations."),
) -> None:
    """Show a pipeline's last data-quality validation results (expectation, verdict, observed value)."""
    from kappalake.quality.results import read_last_results

    run_ctx = global_options(ctx).context(pipeline)
    paths = results_paths(run_ctx)
    found = [p for p in paths if _existing(p)]
    if not found:
        console.print(f"no quality results yet for {pipeline} (looked in {', '.join(paths)}); results appear once "
                      "a layer with expectations has processed a batch")
        return
    rows: list[dict[str, Any]] = []
    for path in found:
        rows += read_last_results(path, limit, failed_only=failed)
    rows = sorted(rows, key=lambda r: (r["validated_at"], r["batch_id"]), reverse=True)[:limit]
    table = Table(title=f"{pipeline} quality results ({len(rows)} shown)")
    for column in ("validated at", "table", "batch", "expectation", "kind", "level", "on fail", "result", "observed"):
        table.add_column(column, overflow="fold")
    for row in rows:
        verdict = "[green]pass[/]" if row["success"] else "[bold red]FAIL[/]"
        table.add_row(str(row["validated_at"])[:19], row["table"], str(row["batch_id"]), row["expectation"],
                      row["kind"], row["level"], row["on_fail"], verdict, row["observed_value"])
    console.print(table)
