"""``kappalake status``: the local stack, pinned and running versions, and each layer's last run."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone

import typer
from rich.console import Group
from rich.text import Text

from kappalake import versions
from kappalake.cli.common import console, global_options
from kappalake.cli.output import plain, rich_table
from kappalake.config.loader import load_project
from kappalake.ops.runinfo import is_running, read_run_record
from kappalake.ops.tables import delta_table_stats
from kappalake.pipelines.runner import LAYERS
from kappalake.runtime.context import RunContext
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import ClickHouseEndpoint, LocalStack


def _when(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M:%S")


def _state(record: dict) -> str:
    if not record:
        return "never run"
    if is_running(record):
        return "waiting for schema registry" if record.get("waiting") else "running"
    if record.get("error"):
        return "failed"
    if record.get("finished_at") is None:
        return "ended unclosed"  # the process died without closing its run (SIGKILL, crash)
    return f"stopped ({record['stopped_by']})" if record.get("stopped_by") else "stopped"


def _live_columns(record: dict) -> list[str]:
    live = record.get("live") or {}
    lag = live.get("lag") or {}
    rate = live.get("processed_rows_per_second")
    latency = live.get("latency_p95_s")
    return [
        str(live.get("last_batch_at") or "-").replace("T", " ")[:19],
        f"{rate:,.0f}" if isinstance(rate, (int, float)) else "-",
        " ".join(f"{k.rsplit('/', 1)[1]}:{v}" for k, v in sorted(lag.items())) or "-",
        _watermark(live.get("watermark")),
        f"{latency:,.1f}s" if isinstance(latency, (int, float)) else "-",
        f"{live['state_rows']:,}" if isinstance(live.get("state_rows"), int) else "-",
        _size(live.get("state_bytes")),
    ]


def _size(value: object) -> str:
    if not isinstance(value, int):
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return f"{value:.1f} GiB"


def _watermark(value: object) -> str:
    """The event-time watermark, or '-' while the query has none (Spark reports the epoch then)."""
    text = str(value or "").replace("T", " ")[:19]
    return "-" if not text or text.startswith("1970-01-01 00:00:00") else text


def _table(rows: list[dict[str, str]], title: str) -> object:
    """A rich table on a terminal (cells fold, nothing cut); plain aligned text otherwise."""
    columns = list(rows[0]) if rows else []
    if sys.stdout.isatty():
        return rich_table(rows, columns, title)
    return Text(f"{title}\n{plain(rows, columns)}\n", no_wrap=True, overflow="ignore")


def command(ctx: typer.Context,
            pipeline: str | None = typer.Argument(None, help="Pipeline name; all pipelines when omitted."),
            watch: bool = typer.Option(False, "--watch", help="Refresh every 2 seconds until Ctrl-C."),
            ) -> None:
    """Per layer: running or not, last batch, rows/s, lag per partition, watermark, latency p95,
    dead letters, tables; plus the local stack and the Spark/Delta/Kafka versions."""
    if not watch or not sys.stdout.isatty():
        while True:
            console.print(render(ctx, pipeline), soft_wrap=True)
            if not watch:
                return
            try:
                time.sleep(2)
            except KeyboardInterrupt:
                return
    from rich.live import Live

    with Live(render(ctx, pipeline), console=console, refresh_per_second=1) as live:
        try:
            while True:
                time.sleep(2)
                live.update(render(ctx, pipeline))
        except KeyboardInterrupt:
            pass


def render(ctx: typer.Context, pipeline: str | None) -> Group:
    """Everything ``status`` shows, as one renderable."""
    out: list = []
    options = global_options(ctx)
    project = load_project(options.conf_dir, options.target)
    layout = HomeLayout.from_env()
    stack = LocalStack(layout).status()
    endpoint = ClickHouseEndpoint(layout).status()
    out.append(f"target [bold]{project.target.name}[/], data dir {layout.home}, local Kafka broker: "
               f"[bold]{stack.state}[/]" + (f" at {stack.bootstrap_servers}" if stack.bootstrap_servers else "")
               + f", ClickHouse endpoint: [bold]{endpoint.state}[/]" + (f" at {endpoint.dsn}" if endpoint.dsn else ""))
    pinned: list[dict[str, str]] = []
    names = [pipeline] if pipeline else list(project.pipelines)
    unknown = [n for n in names if n not in project.pipelines]
    if unknown:
        from kappalake.errors import ConfigError
        raise ConfigError(f"no pipeline named {unknown[0]!r} (defined: {', '.join(project.pipelines)})")
    running: dict[str, str] = {}
    layers: list[dict[str, str]] = []
    live: list[dict[str, str]] = []
    errors: list[str] = []
    for name in names:
        run_ctx = RunContext(project.pipelines[name], project.target, layout)
        for layer in LAYERS:
            record = read_run_record(run_ctx.runs_dir, layer) or {}
            running = record.get("versions") or running
            span = f"{_when(record.get('started_at'))}-{_when(record.get('finished_at'))}" if record else "-"
            # gold keeps its windows in ClickHouse; its Delta table holds only the late pairs
            stats = delta_table_stats(run_ctx.table_path(layer)) if layer != "gold" else None
            layers.append({"layer": f"{name}.{layer}", "state": _state(record), "last run (UTC)": span,
                           "batches": str(record.get("batches", "-")), "rows in": str(record.get("input_rows", "-")),
                           "table rows": str(stats.rows) if stats else "-"})
            live.append(dict(zip(("layer", "last batch (UTC)", "rows/s", "lag partition:offsets", "watermark",
                                  "p95 latency", "state rows", "state size"), [f"{name}.{layer}", *_live_columns(record)],
                                 strict=True)))
            if record.get("lost_offsets"):
                errors.append(f"{name}.{layer} last run skipped {record['lost_offsets']} offsets no longer in Kafka")
            if record.get("error"):
                errors.append(f"{name}.{layer} last run failed: {record['error']}")
            if record.get("waiting") and is_running(record):
                errors.append(f"{name}.{layer} {record['waiting']}")
    line = versions.selected_line()
    for component, value, key in (("Spark", f"{line.spark} (line {line.name})", "spark"),
                                  ("Delta Lake", line.delta, "delta"),
                                  ("Spark Kafka connector", line.spark, "kafka_connector"),
                                  ("kafka-clients (Spark side)", line.kafka_clients, "kafka_clients"),
                                  ("Kafka broker (local stack)", versions.KAFKA_BROKER_VERSION, None),
                                  ("connector path", "jvm (spark-sql-kafka-0-10)", "connector_path")):
        pinned.append({"component": component, "pinned": value, "last run": running.get(key, "-") if key else
                       (stack.broker.version if stack.broker else "-")})
    out += [_table(pinned, "versions"), _table(layers, "layers"), _table(live, "live (last batch of each layer)")]
    for name in names:
        dead = delta_table_stats(RunContext(project.pipelines[name], project.target, layout).table_path("dead_letter"))
        if dead is not None:
            out.append(f"{name}: {dead.rows} records in the dead-letter table "
                       f"('kappalake dlq {name} list' shows them)")
    out += [f"[red]{line}[/]" for line in errors]
    return Group(*out)
