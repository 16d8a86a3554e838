"""``kappalake dlq <pipeline> list|replay``: inspect and re-publish dead-lettered records."""

from __future__ import annotations

import typer
from rich.table import Table

from kappalake.cli.common import console, global_options
from kappalake.pipelines.dead_letters import list_dead_letters, replay_dead_letters

app = typer.Typer(help="Inspect and replay a pipeline's dead-letter queue.", no_args_is_help=True)


def _preview(value: bytes | None, width: int = 60) -> str:
    if value is None:
        return "(null)"
    text = value.decode("utf-8", errors="replace")
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("list")
def list_command(
    ctx: typer.Context,
    pipeline: str = typer.Argument(..., help="Pipeline name."),
    where: str | None = typer.Option(None, help="SQL filter, e.g. \"error_class = 'type'\"."),
    pending: bool = typer.Option(False, "--pending", help="Only records not replayed yet."),
    limit: int = typer.Option(50, min=1, help="Rows to show (newest first)."),
) -> None:
    """Show dead-lettered records with their reasons."""
    rows = list_dead_letters(global_options(ctx).context(pipeline), where, include_replayed=not pending,
                             limit=limit).to_pylist()
    table = Table(title=f"{pipeline} dead letters ({len(rows)} shown)")
    for column in ("source", "error", "message", "failed at", "replayed", "payload"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(f"{row['source_topic']}/{row['source_partition']}/{row['source_offset']}", row["error_class"],
                      row["error_message"], str(row["failed_at"])[:19], str(row["replayed_at"] or "")[:19],
                      _preview(row["value"]))
    console.print(table)


@app.command()
def replay(
    ctx: typer.Context,
    pipeline: str = typer.Argument(..., help="Pipeline name."),
    where: str | None = typer.Option(None, help="SQL filter selecting the records to replay."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be replayed."),
) -> None:
    """Re-publish selected (not yet replayed) dead letters to their source topic and mark them replayed."""
    summary = replay_dead_letters(global_options(ctx).context(pipeline), where, dry_run)
    if dry_run:
        console.print(f"{summary.selected} dead letters would be replayed")
    else:
        console.print(f"selected {summary.selected}, re-published {summary.published}, marked replayed "
                      f"{summary.marked}")
