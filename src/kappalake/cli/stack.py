"""``kappalake stack up|down|status``: the embedded local Kafka broker."""

from __future__ import annotations

import typer
from rich.table import Table

from kappalake.cli.common import console, global_options
from kappalake.config.loader import load_project
from kappalake.io.kafka.admin import TopicSpec
from kappalake.runtime.stack import LocalStack

app = typer.Typer(help="Start, stop and inspect the embedded local stack (a real Kafka broker in KRaft mode).",
                  no_args_is_help=True)


@app.command()
def up(ctx: typer.Context,
       timeout: float = typer.Option(120.0, help="Seconds to wait for the broker to answer.")) -> None:
    """Start the local Kafka broker (if not running) and create the configured topics."""
    options = global_options(ctx)
    project = load_project(options.conf_dir, options.target)
    topics = [TopicSpec(t, p.source.partitions) for p in project.pipelines.values() for t in p.source.topics]
    topics += [TopicSpec(p.dead_letter.kafka_topic, p.source.partitions) for p in project.pipelines.values()
               if p.dead_letter.kafka_topic]
    stack = LocalStack()
    before = stack.status().state
    status = stack.up(topics, timeout=timeout)
    verb = "already running" if before == "running" else "started"
    if before == "stale":
        console.print("[yellow]found a stale state file (broker process gone); starting a new broker[/]")
    assert status.broker is not None
    console.print(f"Kafka broker {verb}: [bold]{status.broker.bootstrap_servers}[/] (pid {status.broker.pid}, "
                  f"Kafka {status.broker.version}, data dir {status.home})")
    if topics:
        console.print("topics: " + ", ".join(f"{t.name} ({t.partitions} partitions)" for t in topics))


@app.command()
def down() -> None:
    """Stop the local Kafka broker (its data stays in the data dir)."""
    state = LocalStack().down()
    messages = {"running": "Kafka broker stopped", "stale": "removed a stale state file (broker was not running)",
                "stopped": "Kafka broker was not running"}
    console.print(messages[state])


@app.command()
def status() -> None:
    """Show whether the local Kafka broker runs, and where."""
    current = LocalStack().status()
    table = Table(title="local stack", show_header=False)
    table.add_row("state", current.state)
    table.add_row("data dir", str(current.home))
    if current.broker:
        table.add_row("bootstrap servers", current.broker.bootstrap_servers)
        table.add_row("pid", str(current.broker.pid))
        table.add_row("Kafka", current.broker.version)
        table.add_row("log", current.broker.log_file)
    console.print(table)
    if current.state != "running":
        raise typer.Exit(code=1)
