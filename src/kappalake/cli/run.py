"""``kappalake run``: run a pipeline's layers as streaming queries."""

from __future__ import annotations

from dataclasses import replace

import typer

from kappalake.cli.common import console, global_options
from kappalake.cli.output import print_table
from kappalake.io.delta.stream import Trigger
from kappalake.errors import ConfigError
from kappalake.io.kafka.offsets import OffsetResolver, parse_offsets, parse_timestamp, resolve_ranges
from kappalake.pipelines.runner import expand_layers, run_pipeline
from kappalake.runtime.context import RunContext


def with_start_position(run_ctx: RunContext, offsets: str | None, timestamp: str | None) -> RunContext:
    """The context of a first start at a position (refused later if a checkpoint exists)."""
    if offsets is not None and timestamp is not None:
        raise ConfigError("give --starting-offsets or --starting-timestamp, not both")
    resolver = OffsetResolver(run_ctx.bootstrap_servers(), run_ctx.kafka_options)
    topics = run_ctx.pipeline.source.topics
    if not topics:
        raise ConfigError("a start position needs source.subscribe or source.assign (not a pattern)")
    if timestamp is not None:
        ranges = resolve_ranges(resolver, topics, from_timestamp=parse_timestamp(timestamp, "--starting-timestamp"))
    elif offsets in ("earliest", "latest"):
        ranges = resolve_ranges(resolver, topics, from_earliest=True)
        if offsets == "latest":
            ranges = [replace(r, start=r.end) for r in ranges]
    else:
        ranges = resolve_ranges(resolver, topics, from_offsets=parse_offsets(offsets or "", "--starting-offsets"))
    starts: dict[str, dict[int, int]] = {}
    for r in ranges:
        starts.setdefault(r.topic, {})[r.partition] = r.start
    return replace(run_ctx, start_offsets=starts)


def query_targets(run_ctx: RunContext, layers: tuple[str, ...]) -> list[tuple[str, str]]:
    """(query name, where it writes) for every query of ``layers``."""
    name = run_ctx.pipeline.name
    rows = []
    for layer in layers:
        if layer == "gold":
            tables = ", ".join(view.clickhouse.table for view in run_ctx.pipeline.gold.views.values())
            rows.append((f"{name}.gold", f"ClickHouse {tables} (late pairs: {run_ctx.table_path('late_events')})"))
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
    starting_offsets: str | None = typer.Option(
        None, "--starting-offsets", help='First start only: earliest, latest, or JSON {"topic": {"0": 100}}.'),
    starting_timestamp: str | None = typer.Option(
        None, "--starting-timestamp", help="First start only: the first record at or after this time (ISO-8601)."),
) -> None:
    """Run a pipeline: live until stopped, or with --available-now until caught up."""
    layers = expand_layers(layer)
    run_ctx = global_options(ctx).context(pipeline)
    if starting_offsets is not None or starting_timestamp is not None:
        run_ctx = with_start_position(run_ctx, starting_offsets, starting_timestamp)
    result = run_pipeline(run_ctx, layers, Trigger(available_now=available_now, interval=trigger_interval))
    rows = []
    for query, target in query_targets(run_ctx, layers):
        totals = result.totals.get(query)
        rows.append({"query": query, "batches": totals.batches if totals else 0,
                     "input rows": totals.input_rows if totals else 0, "table": target})
    print_table(rows, title=f"{pipeline}: run finished in {result.seconds:.1f}s")
    for query, lost in result.lost_offsets.items():
        if lost:
            console.print(f"[bold red]{query}: {lost} offsets were no longer in Kafka and were skipped "
                          "(failOnDataLoss=false); see the warning above for the ranges[/]")
