"""``kappalake dlq <pipeline> list|replay``: inspect and re-publish dead-lettered records."""

from __future__ import annotations

from enum import Enum

import typer
from kappalake.cli.common import console, global_options
from kappalake.cli.output import Format, print_table
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
    fmt: Format = typer.Option(Format.table, "--format", help="list: table, json (one object per line) or csv."),
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
    shown = [{"source": f"{row['source_topic']}/{row['source_partition']}/{row['source_offset']}",
              "error": row["error_class"], "message": row["error_message"], "failed at": str(row["failed_at"])[:19],
              "replayed": str(row["replayed_at"] or "")[:19], "payload": _preview(row["value"])} for row in rows]
    print_table(shown, fmt, title=f"{pipeline} dead letters ({len(rows)} shown)",
                columns=("source", "error", "message", "failed at", "replayed", "payload"))
