"""``kappalake dlq <pipeline> list|replay``: inspect and re-publish dead-lettered records."""

from __future__ import annotations

from enum import Enum

import typer
from rich.table import Table

from kappalake.cli.common import console, global_options
from kappalake.pipelines.dead_letters import list_dead_letters, replay_dead_letters


class Action(str, Enum):
    list = "list"
    replay = "replay"


def _preview(value: bytes | None, width: int = 60) -> str:
    if value is None:
        return "(null)"
    text = value.decode("utf-8", errors="replace")
    return text if len(text) <= width else text[: width - 1] + "…"


def command(
    ctx: typer.Context,
    pipeline: str = typer.Argument(..., help="Pipeline name."),
    action: Action = typer.Argument(..., help="list: show dead letters; replay: re-publish them to their source "
                                                "topic after a fix and mark them replayed."),
    where: str | None = typer.Option(None, help="SQL filter, e.g. \"error_class = 'type'\"."),
    pending: bool = typer.Option(False, "--pending", help="list: only records not replayed yet."),
    limit: int = typer.Option(50, min=1, help="list: rows to show (newest first)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="replay: only count what would be replayed."),
) -> None:
    """Inspect (list) or re-publish (replay) a pipeline's dead-lettered records."""
    run_ctx = global_options(ctx).context(pipeline)
    if action is Action.replay:
        summary = replay_dead_letters(run_ctx, where, dry_run)
        if dry_run:
            console.print(f"{summary.selected} dead letters would be replayed")
        else:
            console.print(f"selected {summary.selected}, re-published {summary.published}, marked replayed "
                          f"{summary.marked}")
        return
    rows = list_dead_letters(run_ctx, where, include_replayed=not pending, limit=limit).to_pylist()
    table = Table(title=f"{pipeline} dead letters ({len(rows)} shown)")
    for column in ("source", "error", "message", "failed at", "replayed", "payload"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(f"{row['source_topic']}/{row['source_partition']}/{row['source_offset']}", row["error_class"],
                      row["error_message"], str(row["failed_at"])[:19], str(row["replayed_at"] or "")[:19],
                      _preview(row["value"]))
    console.print(table)
