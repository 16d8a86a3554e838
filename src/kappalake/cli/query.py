"""``kappalake query``: the current rows of a gold view, read from ClickHouse with FINAL."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import typer
from rich.table import Table

from kappalake.cli.common import console, global_options
from kappalake.config.durations import parse_seconds
from kappalake.config.models import GoldViewConfig
from kappalake.errors import ConfigError, KappalakeError
from kappalake.io.clickhouse.client import connect


def view_sql(view: GoldViewConfig, since: datetime | None, keys: dict[str, str], limit: int) -> tuple[str, dict[str, Any]]:
    """The SELECT ... FINAL for ``view`` with its parameters (bound, never interpolated)."""
    where, params = [], {}
    if since is not None:
        where.append("window_end >= {since:DateTime64(6, 'UTC')}")
        params["since"] = since
    for i, (column, value) in enumerate(keys.items()):
        where.append(f"`{column}` = {{k{i}:String}}")
        params[f"k{i}"] = value
    order = ", ".join(["window_start", *[f"`{k}`" for k in view.group_by]])
    sql = (f"SELECT * EXCEPT (version, updated_at) FROM `{view.clickhouse.table}` FINAL"
           + (f" WHERE {' AND '.join(where)}" if where else "") + f" ORDER BY {order} LIMIT {int(limit)}")
    return sql, params


def parse_keys(view_name: str, view: GoldViewConfig, given: list[str]) -> dict[str, str]:
    """``--key VALUE`` (the first group key) or ``--key column=VALUE``."""
    keys = {}
    for item in given:
        column, sep, value = item.partition("=")
        if not sep:
            column, value = view.group_by[0], item
        if column not in view.group_by:
            raise ConfigError(f"--key {item!r}: view {view_name!r} groups by {', '.join(view.group_by)}, not {column!r}")
        keys[column] = value
    return keys


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return "" if value is None else str(value)


def command(
    ctx: typer.Context,
    pipeline: str = typer.Argument(..., help="Pipeline name."),
    view: str = typer.Argument(..., help="Gold view name (gold.views.<name>)."),
    last: str | None = typer.Option(None, "--last", help="Only windows that ended in this span before now: 15m, 2 hours."),
    key: list[str] = typer.Option([], "--key", help="Group key value (first key), or column=value; repeatable."),
    output: str = typer.Option("table", "--format", help="table, json (one object per line) or csv."),
    limit: int = typer.Option(1000, "--limit", min=1, help="At most this many rows."),
) -> None:
    """Print the current rows of a gold view (ClickHouse, read with FINAL), oldest window first."""
    run_ctx = global_options(ctx).context(pipeline)
    views = run_ctx.pipeline.gold.views
    if view not in views:
        raise ConfigError(f"pipeline {pipeline!r} has no gold view {view!r}; views: {', '.join(views) or 'none'}")
    if output not in ("table", "json", "csv"):
        raise ConfigError(f"--format {output!r}: expected table, json or csv")
    spec = views[view]
    since = None
    if last is not None:
        try:
            since = datetime.now(timezone.utc) - timedelta(seconds=parse_seconds(last))
        except ValueError as exc:
            raise ConfigError(f"--last {last!r}: {exc}") from None
    sql, params = view_sql(spec, since, parse_keys(view, spec, key), limit)
    ch = connect(run_ctx.target.clickhouse.dsn)
    exists = ch.rows("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
                     {"t": spec.clickhouse.table})[0][0]
    if not exists:
        raise KappalakeError(f"ClickHouse table {spec.clickhouse.table!r} of view {pipeline}.{view} does not exist "
                             f"yet; run 'kappalake run {pipeline} --layer gold' first")
    result = ch.client.query(sql, parameters=params)
    columns, rows = list(result.column_names), list(result.result_rows)
    if output == "json":
        for row in rows:
            typer.echo(json.dumps(dict(zip(columns, row, strict=True)), default=_text))
    elif output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows([[_text(v) for v in row] for row in rows])
        typer.echo(buffer.getvalue(), nl=False)
    else:
        table = Table(title=f"{pipeline}.{view} ({spec.clickhouse.table}, FINAL): {len(rows)} rows")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*[_text(v) for v in row])
        console.print(table)
