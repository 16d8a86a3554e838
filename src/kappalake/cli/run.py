"""``kappalake run``: run a pipeline's layers as streaming queries."""

from __future__ import annotations

import typer
from rich.table import Table

from kappalake.cli.common import console, global_options
from kappalake.io.delta.stream import Trigger
from kappalake.pipelines.runner import expand_layers, run_pipeline
from kappalake.runtime.context import RunContext


def query_targets(run_ctx: RunContext, layers: tuple[str, ...]) -> list[tuple[str, str]]:
    """(query name, where it writes) for every query of ``layers``."""
    name = run_ctx.pipeline.name
    rows = []
    for layer in layers:
        if layer == "gold":
            rows.append((f"{name}.gold", run_ctx.table_path("gold_events")))
            rows += [(f"{name}.gold.{view_name}", f"ClickHouse {view.clickhouse.table}")
                     for view_name, view in run_ctx.pipeline.gold.views.items()]
        else:
            rows.append((f"{name}.{layer}", run_ctx.table_path(layer)))
    return rows


def command(
    ctx: typer.Context,
    pipeline: str = typer.Argument(..., help="Pipeline name (conf/pipelines/<name>.yml)."),
    layer: str = typer.Option("all", "--layer", help="bronze, silver, gold, a comma-separated list (bronze,silver), or all; one Spark application."),
    available_now: bool = typer.Option(False, "--available-now",
                                       help="Process everything available now, then stop (batch-like run)."),
    trigger_interval: str = typer.Option("5 seconds", "--trigger", help="Micro-batch interval for live runs."),
) -> None:
    """Run a pipeline: live until stopped, or with --available-now until caught up."""
    layers = expand_layers(layer)
    run_ctx = global_options(ctx).context(pipeline)
    result = run_pipeline(run_ctx, layers, Trigger(available_now=available_now, interval=trigger_interval))
    table = Table(title=f"{pipeline}: run finished in {result.seconds:.1f}s")
    for column in ("query", "batches", "input rows", "table"):
        table.add_column(column)
    for query, target in query_targets(run_ctx, layers):
        totals = result.totals.get(query)
        table.add_row(query, str(totals.batches if totals else 0), str(totals.input_rows if totals else 0), target)
    console.print(table)
    for query, lost in result.lost_offsets.items():
        if lost:
            console.print(f"[bold red]{query}: {lost} offsets were no longer in Kafka and were skipped "
                          "(failOnDataLoss=false); see the warning above for the ranges[/]")
