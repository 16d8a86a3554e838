"""``kappalake stack up --profile cluster``: the production-like services next to ClickHouse and the registry.

* :class:`~.secure_broker.SecureBroker` instead of the PLAINTEXT broker (SASL_SSL, SCRAM-SHA-512, ACLs);
* :class:`~.object_store.ObjectStore`, an S3 endpoint (moto) with the bucket the ``cluster`` target writes;
* :class:`~.spark_cluster.SparkCluster`, a standalone master and two workers.

The functions return the lines the CLI prints; no secret is part of them.
"""

from __future__ import annotations

from collections.abc import Iterable

from kappalake.io.kafka.admin import TopicSpec
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.object_store import ObjectStore
from kappalake.runtime.stack.secure_broker import SecureBroker, control_topics, grant_for, pipeline_user
from kappalake.runtime.stack.spark_cluster import SparkCluster

PROFILES = ("local", "cluster")


def _verb(before: str) -> str:
    return "already running" if before == "running" else "started"


def up_broker(layout: HomeLayout, pipelines: Iterable[object], topics: list[TopicSpec], timeout: float) -> list[str]:
    """Start the SASL_SSL broker, create ``topics``, the pipeline principal and its ACLs."""
    pipelines = list(pipelines)
    known = {t.name for t in topics}
    topics = [*topics, *(TopicSpec(name, 1) for p in pipelines for name in control_topics(p) if name not in known)]
    broker = SecureBroker(layout)
    before = broker.status().state
    status = broker.up(topics, timeout=timeout, grant=grant_for(pipelines))
    info = status.broker  # type: ignore[attr-defined]
    grant = grant_for(pipelines)
    lines = [f"Kafka broker {_verb(before)} (SASL_SSL, SCRAM-SHA-512): [bold]{info.bootstrap_servers}[/] "
             f"(pid {info.pid}, Kafka {info.version}, CA {broker.ca_file})",
             f"principal User:{pipeline_user()}: read {', '.join(grant.read) or '-'}; groups spark-kafka-source-*"
             + (f"; write {', '.join(grant.write)}" if grant.write else "")]
    if topics:
        lines.append("topics: " + ", ".join(f"{t.name} ({t.partitions} partitions)" for t in topics))
    return lines


def up_cluster(layout: HomeLayout, timeout: float) -> list[str]:
    """Start the S3 endpoint and the Spark standalone cluster."""
    store = ObjectStore(layout)
    before = store.status().state
    served = store.up(timeout=timeout)
    assert served.server is not None
    lines = [f"S3 endpoint (moto) {_verb(before)}: [bold]{served.server.endpoint}[/] (pid {served.server.pid}, "
             f"bucket s3a://{served.server.bucket}; in memory: objects go with 'stack down')"]
    cluster = SparkCluster(layout)
    before = cluster.status().state
    running = cluster.up(timeout=max(timeout, 120.0))
    assert running.server is not None
    lines.append(f"Spark standalone cluster {_verb(before)}: [bold]{running.server.url}[/] (master pid "
                 f"{running.server.master.pid}, workers "
                 f"{', '.join(str(w.pid) for w in running.server.workers)}; UI http://127.0.0.1:"
                 f"{running.server.master.webui_port})")
    return lines


def down_cluster(layout: HomeLayout) -> list[str]:
    """Stop the Spark cluster and the S3 endpoint (silent when they were not running)."""
    lines = []
    for name, service in (("Spark standalone cluster", SparkCluster(layout)), ("S3 endpoint", ObjectStore(layout))):
        state = service.down()
        if state == "running":
            lines.append(f"{name} stopped")
        elif state == "stale":
            lines.append(f"{name}: removed a stale state file (it was not running)")
    return lines


def cluster_rows(layout: HomeLayout) -> list[dict[str, str]]:
    """``kappalake stack status`` rows of the cluster profile's services (only when they were started)."""
    rows = []
    store = ObjectStore(layout).status()
    if store.server is not None:
        rows.append({"service": "s3", "state": store.state, "address": store.server.endpoint,
                     "pid": str(store.server.pid), "log": store.server.log_file})
    cluster = SparkCluster(layout).status()
    if cluster.server is not None:
        server = cluster.server
        rows.append({"service": "spark-master", "state": "running" if cluster.alive.get("master") else "stopped",
                     "address": server.url, "pid": str(server.master.pid), "log": server.master.log_file})
        for worker in server.workers:
            rows.append({"service": f"spark-{worker.role}",
                         "state": "running" if cluster.alive.get(worker.role) else "stopped",
                         "address": f"127.0.0.1:{worker.port}", "pid": str(worker.pid), "log": worker.log_file})
    return rows
