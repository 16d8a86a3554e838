"""``kappalake backfill``: replay a bounded range through one layer, next to the live query."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from kappalake.cli.common import console, global_options


class TransferSpeed(TextColumn):
    """Records per second of the task."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[no-untyped-def]
        from rich.text import Text

        return Text(f"{task.speed or 0:,.0f} rec/s")
from kappalake.io.kafka.offsets import parse_offsets, parse_timestamp
from kappalake.pipelines.backfill import BackfillPlan, plan_backfill, run_backfill


def print_plan(plan: BackfillPlan) -> None:
    table = Table(title=f"backfill {plan.name}: {plan.pipeline} {plan.layer}, {plan.records} records")
    for column in ("topic", "partition", "from offset", "to offset (excl.)", "records"):
        table.add_column(column)
    for r in plan.ranges:
        table.add_row(r.topic, str(r.partition), str(r.start), str(r.end), str(r.records))
    console.print(table)
    if plan.layer == "gold" and (plan.window_from or plan.window_to):
        console.print(f"gold windows written: start >= {plan.window_from or '-'}, end <= {plan.window_to or '-'}")


def command(
    ctx: typer.Context,
    pipeline: str = typer.Argument(..., help="Pipeline name."),
    layer: str = typer.Option(..., "--layer", help="bronze, silver or gold."),
    from_timestamp: str | None = typer.Option(None, "--from-timestamp", help="Start at the first record at or after this time (ISO-8601, Kafka timestamp)."),
    from_offsets: str | None = typer.Option(None, "--from-offsets", help='Start offsets, JSON: {"topic": {"0": 100}}.'),
    from_earliest: bool = typer.Option(False, "--from-earliest", help="Start at the log start of every partition."),
    to_timestamp: str | None = typer.Option(None, "--to-timestamp", help="Stop before the first record at or after this time."),
    to_offsets: str | None = typer.Option(None, "--to-offsets", help="Stop before these offsets (exclusive), JSON."),
    name: str | None = typer.Option(None, "--name", help="Run name (checkpoint); rerun with the same name to resume. Default: derived from the arguments."),
    max_offsets_per_trigger: int = typer.Option(2_000_000, "--max-offsets-per-trigger", min=1, help="Records per micro-batch (large: a replay is throughput-bound)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the offset ranges and record count, run nothing."),
) -> None:
    """Replay a range of the pipeline's topics through one layer with the live job's code; idempotent."""
    run_ctx = global_options(ctx).context(pipeline)
    arguments = {
        "from_timestamp": parse_timestamp(from_timestamp, "--from-timestamp") if from_timestamp else None,
        "from_offsets": parse_offsets(from_offsets, "--from-offsets") if from_offsets else None,
        "from_earliest": from_earliest,
        "to_timestamp": parse_timestamp(to_timestamp, "--to-timestamp") if to_timestamp else None,
        "to_offsets": parse_offsets(to_offsets, "--to-offsets") if to_offsets else None,
    }
    plan = plan_backfill(run_ctx, layer, name=name, max_offsets_per_trigger=max_offsets_per_trigger, **arguments)
    print_plan(plan)
    if dry_run:
        console.print("dry run: nothing was read or written")
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TransferSpeed(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"{pipeline} {layer}", total=plan.records)
        summary = run_backfill(run_ctx, plan, on_progress=lambda done: bar.update(task, completed=done))
    table = Table(title=f"backfill {plan.name} finished in {summary.seconds:.1f}s")
    table.add_column("what")
    table.add_column("rows", justify="right")
    table.add_row("records read", str(summary.records_read))
    for what, rows in summary.rows_written.items():
        table.add_row(f"rows written: {what}", str(rows))
    rate = summary.records_read / summary.seconds if summary.seconds else 0.0
    table.add_row("rate (records/s)", f"{rate:,.0f}")
    console.print(table)
