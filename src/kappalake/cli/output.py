"""Tables for people and for scripts: a rich table on a terminal (cells wrap, nothing is cut), plain
aligned text when stdout is not a terminal, or ``--format json|csv``."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import Any

import typer
from rich.table import Table

from kappalake.cli.common import console


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def text(value: Any) -> str:
    """A cell as text: ISO times, empty for None."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return "" if value is None else str(value)


def plain(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Aligned columns separated by two spaces, no borders and no cut cells (for pipes and logs)."""
    cells = [[text(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def rich_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> Table:
    """A rich table whose cells fold onto more lines instead of being cut with an ellipsis."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[text(row.get(c)) for c in columns])
    return table


def print_table(rows: Sequence[dict[str, Any]], fmt: Format | str = Format.table, title: str | None = None,
                columns: Sequence[str] | None = None) -> None:
    """Print ``rows`` as a table (rich on a terminal, plain text otherwise), JSON lines or CSV."""
    columns = list(columns or (rows[0].keys() if rows else []))
    fmt = Format(fmt)
    if fmt is Format.json:
        for row in rows:
            typer.echo(json.dumps({c: row.get(c) for c in columns}, default=text))
    elif fmt is Format.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows([[text(row.get(c)) for c in columns] for row in rows])
        typer.echo(buffer.getvalue(), nl=False)
    elif sys.stdout.isatty():
        console.print(rich_table(rows, columns, title))
    else:
        if title:
            typer.echo(title)
        typer.echo(plain(rows, columns) if columns else "(no rows)")
