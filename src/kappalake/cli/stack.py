"""``kappalake stack up|down|status``: the embedded local stack (Kafka broker, ClickHouse endpoint, Schema
Registry endpoint, optionally Prometheus and CDC: PostgreSQL + a Kafka Connect worker with Debezium)."""

from __future__ import annotations

import typer

from kappalake.cli.common import console, global_options
from kappalake.cli.output import Format, print_table
from kappalake.config.loader import load_project
from kappalake.errors import ConfigError
from kappalake.io.kafka.admin import TopicSpec
from kappalake.runtime.stack import (
    ClickHouseEndpoint,
    ConnectWorker,
    LocalStack,
    PostgresServer,
    PrometheusServer,
    SchemaRegistryEndpoint,
)
from kappalake.runtime.stack.cluster_profile import PROFILES, cluster_rows, down_cluster, up_broker, up_cluster
from kappalake.runtime.stack.kafka_connect import CONNECTOR, TOPICS

OPTIONAL = ("prometheus", "cdc")

app = typer.Typer(help="Start, stop and inspect the embedded local stack: a real Kafka broker (KRaft), the "
                       "ClickHouse HTTP endpoint (chDB), a Schema Registry endpoint and, with --with prometheus, a "
                       "Prometheus server; with --with cdc, PostgreSQL 15 and a Kafka Connect worker running "
                       "Debezium's Postgres connector.",
                  no_args_is_help=True)


def _optional(names: list[str]) -> set[str]:
    chosen = {n.strip() for name in names for n in name.split(",") if n.strip()}
    unknown = sorted(chosen - set(OPTIONAL))
    if unknown:
        raise ConfigError(f"--with {unknown[0]!r}: unknown service; optional services: {', '.join(OPTIONAL)}")
    return chosen


@app.command()
def up(ctx: typer.Context,
       timeout: float = typer.Option(120.0, help="Seconds to wait for each service to answer."),
       with_: list[str] = typer.Option([], "--with", help="Optional services to start too: prometheus, cdc."),
       profile: str = typer.Option("local", "--profile", help="local, or cluster: a SASL_SSL broker with ACLs, an "
                                   "S3 endpoint (moto) and a Spark standalone cluster (README 'Cluster target')."),
       ) -> None:
    """Start the local Kafka broker, ClickHouse and Schema Registry endpoints (if not running) and create the
    configured topics."""
    extra = _optional(with_)
    options = global_options(ctx)
    project = load_project(options.conf_dir, options.target)
    topics = [TopicSpec(t, p.source.partitions) for p in project.pipelines.values() for t in p.source.topics]
    topics += [TopicSpec(p.dead_letter.kafka_topic, p.source.partitions) for p in project.pipelines.values()
               if p.dead_letter.kafka_topic]
    if profile not in PROFILES:
        raise ConfigError(f"--profile {profile!r}: unknown profile; expected one of {', '.join(PROFILES)}")
    stack = LocalStack()
    if profile == "cluster":
        for line in up_broker(stack.layout, project.pipelines.values(), topics, timeout):
            console.print(line)
    else:
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
    endpoint = ClickHouseEndpoint(stack.layout)
    before = endpoint.status().state
    served = endpoint.up(timeout=timeout)
    assert served.server is not None
    console.print(f"ClickHouse endpoint {'already running' if before == 'running' else 'started'}: "
                  f"[bold]{served.server.dsn}[/] (pid {served.server.pid}, chDB data in {served.server.data_dir})")
    registry = SchemaRegistryEndpoint(stack.layout)
    before = registry.status().state
    registered = registry.up(timeout=timeout)
    assert registered.server is not None
    console.print(f"Schema Registry endpoint {'already running' if before == 'running' else 'started'}: "
                  f"[bold]{registered.server.url}[/] (pid {registered.server.pid}, schemas in "
                  f"{registered.server.data_dir})")
    if profile == "cluster":
        for line in up_cluster(stack.layout, timeout):
            console.print(line)
    if "prometheus" in extra:
        prometheus = PrometheusServer(stack.layout)
        before = prometheus.status().state
        scraped = prometheus.up(timeout=timeout)
        assert scraped.server is not None
        console.print(f"Prometheus {'already running' if before == 'running' else 'started'}: "
                      f"[bold]{scraped.server.url}[/] (pid {scraped.server.pid}; scrapes the running jobs, "
                      "rules deploy/prometheus/alerts.yml)")
    if "cdc" in extra:
        postgres = PostgresServer(stack.layout)
        before = postgres.status().state
        database = postgres.up(timeout=timeout)
        assert database.server is not None
        console.print(f"PostgreSQL {'already running' if before == 'running' else 'started'}: "
                      f"[bold]{database.server.dsn}[/] (pid {database.server.pid}, data in {database.server.data_dir}; "
                      "local only, trusts 127.0.0.1)")
        connect = ConnectWorker(stack.layout)
        before = connect.status().state
        worker = connect.up(timeout=max(timeout, 180.0))
        assert worker.server is not None
        console.print(f"Kafka Connect {'already running' if before == 'running' else 'started'}: "
                      f"[bold]{worker.server.url}[/] (pid {worker.server.pid}; connector {CONNECTOR} -> "
                      f"{', '.join(TOPICS)})")


@app.command()
def down() -> None:
    """Stop every service of the local stack (their data stays in the data dir)."""
    layout = LocalStack().layout
    for line in down_cluster(layout):  # the cluster profile's Spark cluster and S3 endpoint, when running
        console.print(line)
    for name, service in (("Prometheus", PrometheusServer(layout)), ("Kafka Connect", ConnectWorker(layout)),
                          ("PostgreSQL", PostgresServer(layout)),
                          ("Schema Registry endpoint", SchemaRegistryEndpoint(layout)),
                          ("ClickHouse endpoint", ClickHouseEndpoint(layout)), ("Kafka broker", LocalStack(layout))):
        state = service.down()
        messages = {"running": f"{name} stopped", "stale": f"{name}: removed a stale state file (it was not running)",
                    "stopped": f"{name} was not running"}
        if state != "stopped" or name not in ("Prometheus", "Kafka Connect", "PostgreSQL"):
            console.print(messages[state])


def service_rows() -> list[dict[str, str]]:
    """One row per service: name, state, address, pid, log."""
    layout = LocalStack().layout
    broker = LocalStack(layout).status()
    clickhouse = ClickHouseEndpoint(layout).status()
    registry = SchemaRegistryEndpoint(layout).status()
    prometheus = PrometheusServer(layout).status()
    postgres = PostgresServer(layout).status()
    connect = ConnectWorker(layout).status()
    rows = [
        {"service": "kafka", "state": broker.state, "address": broker.broker.bootstrap_servers if broker.broker else "-",
         "pid": str(broker.broker.pid) if broker.broker else "-", "log": broker.broker.log_file if broker.broker else "-"},
        {"service": "clickhouse", "state": clickhouse.state,
         "address": clickhouse.server.dsn if clickhouse.server else "-",
         "pid": str(clickhouse.server.pid) if clickhouse.server else "-",
         "log": clickhouse.server.log_file if clickhouse.server else "-"},
        {"service": "schema-registry", "state": registry.state,
         "address": registry.server.url if registry.server else "-",
         "pid": str(registry.server.pid) if registry.server else "-",
         "log": registry.server.log_file if registry.server else "-"},
        {"service": "prometheus", "state": prometheus.state,
         "address": prometheus.server.url if prometheus.server else "-",
         "pid": str(prometheus.server.pid) if prometheus.server else "-",
         "log": prometheus.server.log_file if prometheus.server else "-"},
        {"service": "postgres", "state": postgres.state,
         "address": postgres.server.dsn if postgres.server else "-",
         "pid": str(postgres.server.pid) if postgres.server else "-",
         "log": postgres.server.log_file if postgres.server else "-"},
        {"service": "kafka-connect", "state": connect.state,
         "address": connect.server.url if connect.server else "-",
         "pid": str(connect.server.pid) if connect.server else "-",
         "log": connect.server.log_file if connect.server else "-"},
    ]
    return rows + cluster_rows(layout)


@app.command()
def status(fmt: Format = typer.Option(Format.table, "--format", help="table, json or csv.")) -> None:
    """Show which services of the local stack run, and where. Exit 1 when the broker or an endpoint is down."""
    rows = service_rows()
    console.print(f"data dir {LocalStack().layout.home}") if fmt == Format.table else None
    print_table(rows, fmt, title="local stack")
    if any(row["state"] != "running" for row in rows if row["service"] in ("kafka", "clickhouse", "schema-registry")):
        raise typer.Exit(code=1)
