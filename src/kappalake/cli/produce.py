"""``kappalake produce``: publish generated reference events to a pipeline's topic."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from kappalake.cli.common import console, err_console, global_options
from kappalake.errors import KappalakeError
from kappalake.generator import GeneratorOptions
from kappalake.pipelines.produce import produce


def command(
    ctx: typer.Context,
    pipeline: str = typer.Argument(..., help="Pipeline name (conf/pipelines/<name>.yml), or cdc: row changes "
                                             "against the CDC Postgres (--rate, --changes, --seed, --dsn)."),
    events: int | None = typer.Option(None, "--events", min=1, help="Send N events as fast as possible."),
    rate: float | None = typer.Option(None, "--rate", min=0, help="Events per second (with --duration); cdc: "
                                      "changes per second (default 1000, 0 = as fast as possible)."),
    duration: float | None = typer.Option(None, "--duration", min=0.001, help="Seconds to send at --rate."),
    seed: int | None = typer.Option(None, "--seed", help="Seed: the same seed gives the same events (default 0; "
                                    "cdc: 7)."),
    late_fraction: float = typer.Option(0.0, min=0, max=1, help="Fraction of events minutes late."),
    duplicate_fraction: float = typer.Option(0.0, min=0, max=1, help="Fraction re-sending an earlier event."),
    malformed_fraction: float = typer.Option(0.0, min=0, max=1, help="Fraction of broken payloads."),
    start_time: datetime | None = typer.Option(None, help="Event time of the first event with --events "
                                               "(UTC; default now). Fix it for reproducible event times."),
    events_per_second: float = typer.Option(1000.0, min=0.001, help="Event-time spacing with --events."),
    record_format: str | None = typer.Option(None, "--format", help="json, avro or protobuf: must be the "
                                             "pipeline's events.format (default: that format)."),
    evolve: bool = typer.Option(False, "--evolve", help="Avro: write the second half with a second schema version "
                                                        "(the first half without the reader schema's defaulted fields)."),
    changes: int | None = typer.Option(None, "--changes", min=0, help="cdc: row changes to make (default 10000)."),
    dsn: str | None = typer.Option(None, "--dsn", help="cdc: the Postgres DSN (default: the local stack's, "
                                                       "'kappalake stack up --with cdc')."),
) -> None:
    """Produce generated events (idempotent producer, keyed by entity, deterministic for a seed)."""
    if pipeline == "cdc":
        if events is not None or duration is not None or record_format is not None or evolve:
            raise KappalakeError("produce cdc takes --rate, --changes, --seed and --dsn only")
        _produce_cdc(1000.0 if rate is None else rate, 10_000 if changes is None else changes,
                     7 if seed is None else seed, dsn)
        return
    if changes is not None or dsn is not None:
        raise KappalakeError("--changes and --dsn are options of 'kappalake produce cdc'")
    if rate == 0:
        raise KappalakeError("--rate must be > 0")
    seed = 0 if seed is None else seed
    try:
        options = GeneratorOptions(seed=seed, late_fraction=late_fraction, duplicate_fraction=duplicate_fraction,
                                   malformed_fraction=malformed_fraction)
    except ValueError as exc:
        raise KappalakeError(str(exc)) from None
    if record_format not in (None, "json", "avro", "protobuf"):
        raise KappalakeError(f"--format {record_format!r}: expected json, avro or protobuf")
    run_ctx = global_options(ctx).context(pipeline)
    total = events if events is not None else int((rate or 0) * (duration or 0))
    if start_time is not None and start_time.tzinfo is None:
        from datetime import timezone
        start_time = start_time.replace(tzinfo=timezone.utc)
    with Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("produce", total=total)
        summary = produce(run_ctx, events=events, rate=rate, duration=duration, options=options,
                          start_time=start_time, events_per_second=events_per_second,
                          on_progress=lambda n: progress.advance(task, n), record_format=record_format,
                          evolve=evolve)
    table = Table(title=f"produced to {summary.topic}")
    for column in ("sent", "valid", "late", "duplicate", "malformed", "seconds", "events/s"):
        table.add_column(column, justify="right")
    kinds = summary.by_kind
    table.add_row(str(summary.sent), str(kinds["valid"]), str(kinds["late"]), str(kinds["duplicate"]),
                  str(kinds["malformed"]), f"{summary.seconds:.1f}", f"{summary.rate:,.0f}")
    console.print(table)


def _produce_cdc(rate: float, changes: int, seed: int, dsn: str | None) -> None:
    """``kappalake produce cdc``: a seeded mix of row changes against the CDC Postgres."""
    from kappalake.errors import StackError
    from kappalake.generator.cdc_workload import KINDS, CdcWorkload
    from kappalake.runtime.paths import HomeLayout

    if dsn is None:
        from kappalake.runtime.stack.postgres import PostgresServer

        status = PostgresServer(HomeLayout.from_env()).status()
        if status.state != "running" or status.server is None:
            raise StackError("the local Postgres is not running: kappalake stack up --with cdc")
        dsn = status.server.dsn
    with Progress(TextColumn("changing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("cdc", total=changes)
        summary = CdcWorkload(dsn, seed=seed, rate=rate, changes=changes).run(lambda n: progress.advance(task, n))
    table = Table(title="cdc changes" + (" (interrupted)" if summary.interrupted else ""))
    table.add_column("kind")
    table.add_column("changes", justify="right")
    for kind in KINDS:
        table.add_row(kind, str(summary.by_kind[kind]))
    table.add_row("total", str(summary.changes), style="bold")
    console.print(table)
    console.print(f"{summary.by_op['insert']} inserts, {summary.by_op['update']} updates, {summary.by_op['delete']} "
                  f"deletes in {summary.transactions} transactions ({summary.multi_row_transactions} multi-row, "
                  f"{summary.schema_changes} schema change) to {summary.dsn}; {summary.seconds:.1f} s, "
                  f"{summary.rate:,.0f} changes/s; order ids {summary.first_order_id}..{summary.next_order_id - 1}"
                  + (f"; {summary.merchants_seeded} merchants seeded" if summary.merchants_seeded else ""),
                  highlight=False)
