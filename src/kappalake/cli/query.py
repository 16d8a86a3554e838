"""``kappalake query``: the current rows of a gold view, read from ClickHouse with FINAL."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import typer

from kappalake.cli.common import console, global_options
from kappalake.cli.output import print_table, rich_table
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


def fetch_rows(ch: Any, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The view's rows as dicts, in column order."""
    result = ch.client.query(sql, parameters=params)
    columns = list(result.column_names)
    return [dict(zip(columns, row, strict=True)) for row in result.result_rows]


def command(
    ctx: typer.Context,
    pipeline: str = typer.Argument(..., help="Pipeline name."),
    view: str = typer.Argument(..., help="Gold view name (gold.views.<name>)."),
    last: str | None = typer.Option(None, "--last", help="Only windows that ended in this span before now: 15m, 2 hours."),
    key: list[str] = typer.Option([], "--key", help="Group key value (first key), or column=value; repeatable."),
    output: str = typer.Option("table", "--format", help="table, json (one object per line) or csv."),
    limit: int = typer.Option(1000, "--limit", min=1, help="At most this many rows."),
    watch: bool = typer.Option(False, "--watch", help="Refresh until Ctrl-C (read while the job runs)."),
    every: str = typer.Option("1s", "--every", help="--watch: refresh interval, e.g. 1s, 5s."),
) -> None:
    """Print the current rows of a gold view (ClickHouse, read with FINAL), oldest window first."""
    run_ctx = global_options(ctx).context(pipeline)
    views = run_ctx.pipeline.gold.views
    if view not in views:
        raise ConfigError(f"pipeline {pipeline!r} has no gold view {view!r}; views: {', '.join(views) or 'none'}")
    if output not in ("table", "json", "csv"):
        raise ConfigError(f"--format {output!r}: expected table, json or csv")
    try:
        interval = parse_seconds(every)
    except ValueError as exc:
        raise ConfigError(f"--every {every!r}: {exc}") from None
    if interval <= 0:
        raise ConfigError(f"--every {every!r}: expected a positive interval such as 1s")
    spec = views[view]
    span = None
    if last is not None:
        try:
            span = timedelta(seconds=parse_seconds(last))
        except ValueError as exc:
            raise ConfigError(f"--last {last!r}: {exc}") from None
    keys = parse_keys(view, spec, key)
    ch = connect(run_ctx.target.clickhouse.dsn)
    exists = ch.rows("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
                     {"t": spec.clickhouse.table})[0][0]
    if not exists:
        raise KappalakeError(f"ClickHouse table {spec.clickhouse.table!r} of view {pipeline}.{view} does not exist "
                             f"yet; run 'kappalake run {pipeline} --layer gold' first")

    def current() -> list[dict[str, Any]]:
        since = datetime.now(timezone.utc) - span if span is not None else None
        return fetch_rows(ch, *view_sql(spec, since, keys, limit))

    title = f"{pipeline}.{view} ({spec.clickhouse.table}, FINAL)"
    if not watch:
        rows = current()
        print_table(rows, output, title=f"{title}: {len(rows)} rows")
        return
    _watch(current, output, title, interval)


def _watch(current: Any, output: str, title: str, interval: float) -> None:
    """Re-read and re-print until Ctrl-C: in place on a terminal, one block per refresh otherwise."""
    try:
        if output == "table" and sys.stdout.isatty():
            from rich.live import Live

            with Live(console=console, refresh_per_second=4) as live:
                while True:
                    rows = current()
                    stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
                    live.update(rich_table(rows, list(rows[0]) if rows else [], f"{title}: {len(rows)} rows at {stamp} UTC"))
                    time.sleep(interval)
        while True:
            rows = current()
            stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
            print_table(rows, output, title=f"{title}: {len(rows)} rows at {stamp} UTC")
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return
