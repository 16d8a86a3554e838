"""``kappalake status``: the local stack, pinned and running versions, and each layer's last run."""

from __future__ import annotations

from datetime import datetime, timezone

import typer
from rich.table import Table

from kappalake import versions
from kappalake.cli.common import console, global_options
from kappalake.config.loader import load_project
from kappalake.ops.runinfo import read_run_record
from kappalake.ops.tables import delta_table_stats
from kappalake.pipelines.runner import LAYERS
from kappalake.runtime.context import RunContext
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import LocalStack


def _when(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M:%S")


def command(ctx: typer.Context,
            pipeline: str | None = typer.Argument(None, help="Pipeline name; all pipelines when omitted.")) -> None:
    """Show the local stack, the Spark/Delta/Kafka versions, and each pipeline layer's last run and table."""
    options = global_options(ctx)
    project = load_project(options.conf_dir, options.target)
    layout = HomeLayout.from_env()
    stack = LocalStack(layout).status()
    console.print(f"target [bold]{project.target.name}[/], data dir {layout.home}, local Kafka broker: "
                  f"[bold]{stack.state}[/]" + (f" at {stack.bootstrap_servers}" if stack.bootstrap_servers else ""))
    pinned = Table(title="versions", show_header=True)
    for column in ("component", "pinned", "last run"):
        pinned.add_column(column)
    names = [pipeline] if pipeline else list(project.pipelines)
    unknown = [n for n in names if n not in project.pipelines]
    if unknown:
        from kappalake.errors import ConfigError
        raise ConfigError(f"no pipeline named {unknown[0]!r} (defined: {', '.join(project.pipelines)})")
    running: dict[str, str] = {}
    layers = Table(title="layers")
    layers.add_column("layer", no_wrap=True)
    layers.add_column("last run (UTC)", no_wrap=True)
    for column in ("batches", "rows in", "table rows"):
        layers.add_column(column, justify="right", no_wrap=True)
    errors: list[str] = []
    for name in names:
        run_ctx = RunContext(project.pipelines[name], project.target, layout)
        for layer in LAYERS:
            record = read_run_record(run_ctx.runs_dir, layer) or {}
            running = record.get("versions") or running
            stats = delta_table_stats(run_ctx.table_path(layer))
            span = f"{_when(record.get('started_at'))}-{_when(record.get('finished_at'))}" if record else "-"
            layers.add_row(f"{name}.{layer}", span,
                           str(record.get("batches", "-")), str(record.get("input_rows", "-")),
                           str(stats.rows) if stats else "-")
            if record.get("lost_offsets"):
                errors.append(f"{name}.{layer} last run skipped {record['lost_offsets']} offsets no longer in Kafka")
            if record.get("error"):
                errors.append(f"{name}.{layer} last run failed: {record['error']}")
    for component, value, key in (("Spark", versions.SPARK_VERSION, "spark"),
                                  ("Delta Lake", versions.DELTA_VERSION, "delta"),
                                  ("Spark Kafka connector", versions.SPARK_VERSION, "kafka_connector"),
                                  ("kafka-clients (Spark side)", "-", "kafka_clients"),
                                  ("Kafka broker (local stack)", versions.KAFKA_BROKER_VERSION, None),
                                  ("connector path", "jvm", "connector_path")):
        pinned.add_row(component, value, running.get(key, "-") if key else
                       (stack.broker.version if stack.broker else "-"))
    console.print(pinned)
    console.print(layers)
    for name in names:
        dead = delta_table_stats(RunContext(project.pipelines[name], project.target, layout).table_path("dead_letter"))
        if dead is not None:
            console.print(f"{name}: {dead.rows} records in the dead-letter table "
                          f"('kappalake dlq {name} list' shows them)")
    for line in errors:
        console.print(f"[red]{line}[/]")
