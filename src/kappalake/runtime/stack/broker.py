"""The embedded local stack: a real single-node Apache Kafka broker (KRaft) as a child process.

The broker runs from the Kafka server jars resolved from Maven Central (``jars.resolve_broker_jars``),
controller and broker in one JVM on 127.0.0.1, with its log dir and a state file (pid, ports) under
``$KAPPALAKE_HOME/stack``. ``up`` is idempotent; a state file whose process is gone is reported as
stale and replaced. The broker keeps its data across restarts and reuses its ports when free.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from kappalake import versions
from kappalake.errors import BrokerUnreachableError, StackError
from kappalake.io.kafka.admin import TopicSpec, ensure_topics, wait_until_ready
from kappalake.runtime.jars import resolve_broker_jars
from kappalake.runtime.java import check_java
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.service import free_port, log_tail, process_runs, read_state, stop_group

BROKER_HEAP = "-Xmx512m"
StackState = Literal["running", "stopped", "stale"]


@dataclass(frozen=True)
class BrokerInfo:
    pid: int
    port: int
    controller_port: int
    started_at: float
    version: str
    log_file: str
    #: The client listener's protocol: PLAINTEXT, or SASL_SSL for the cluster profile (:mod:`.secure_broker`).
    security: str = "PLAINTEXT"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class StackStatus:
    state: StackState
    broker: BrokerInfo | None
    home: Path

    @property
    def bootstrap_servers(self) -> str | None:
        return self.broker.bootstrap_servers if self.broker and self.state == "running" else None


def _pid_is_broker(pid: int) -> bool:
    return process_runs(pid, "kafka.Kafka")


def _server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "3",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.check.interval.ms": "10000",
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


class LocalStack:
    """Start, stop and inspect the local Kafka broker under one data directory."""

    def __init__(self, layout: HomeLayout | None = None) -> None:
        self.layout = layout or HomeLayout.from_env()
        self.dir = self.layout.stack
        self.state_file = self.dir / "state.json"
        self.data_dir = self.dir / "kafka-data"
        self.log_file = self.dir / "broker.log"

    # ------------------------------------------------------------------ inspection
    def _read_state(self) -> BrokerInfo | None:
        return read_state(self.state_file, BrokerInfo, "Kafka broker")

    def status(self) -> StackStatus:
        """running / stopped / stale (state file left by a broker that is gone)."""
        broker = self._read_state()
        if broker is None:
            return StackStatus("stopped", None, self.layout.home)
        return StackStatus("running" if _pid_is_broker(broker.pid) else "stale", broker, self.layout.home)

    def bootstrap_servers(self) -> str:
        """host:port of the running broker; StackError with the fix if it is not running."""
        status = self.status()
        if status.state != "running" or status.broker is None:
            raise StackError(f"the local Kafka broker is not running ({status.state}; data dir {self.layout.home}); "
                             "start it with 'kappalake stack up'")
        return status.broker.bootstrap_servers

    # ------------------------------------------------------------------ lifecycle
    def up(self, topics: list[TopicSpec] | None = None, timeout: float = 120.0) -> StackStatus:
        """Start the broker unless it runs already; create ``topics``; return the status."""
        status = self.status()
        if status.state == "running" and status.broker is not None:
            if status.broker.security != self.security:
                raise StackError(f"the Kafka broker in {self.layout.home} runs a {status.broker.security} listener, "
                                 f"this profile wants {self.security}: stop it first ('kappalake stack down') or use "
                                 "another KAPPALAKE_HOME")
            self._wait_ready(status.broker, timeout, None)
        else:
            previous = status.broker
            if status.state == "stale":
                self.state_file.unlink(missing_ok=True)
            status = self._start(previous, timeout)
        if topics and status.bootstrap_servers:
            ensure_topics(status.bootstrap_servers, topics, self.admin_options())
        return status

    # ------------------------------------------------------------------ hooks (the SASL_SSL broker overrides them)
    security = "PLAINTEXT"

    def admin_options(self) -> dict[str, str]:
        """``kafka.*`` options of the stack's own admin client (none on the PLAINTEXT broker)."""
        return {}

    def server_properties(self, port: int, controller_port: int) -> str:
        return _server_properties(self.data_dir, port, controller_port)

    def format_arguments(self) -> list[str]:
        """Extra ``StorageTool format`` arguments (SCRAM users of the SASL_SSL broker)."""
        return []

    def prepare(self) -> None:
        """Before the broker starts (certificates of the SASL_SSL broker)."""

    def _wait_ready(self, broker: BrokerInfo, timeout: float, alive) -> None:  # type: ignore[no-untyped-def]
        wait_until_ready(broker.bootstrap_servers, timeout=timeout, options=self.admin_options(), alive=alive)

    def _format_storage(self, java: Path, classpath: str, properties: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = "-"
        while cluster_id.startswith("-"):  # as Kafka's own Uuid.randomUuid: never start with '-'
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [str(java), "-Xmx256m", "-cp", classpath, "kafka.tools.StorageTool", "format",
             f"--cluster-id={cluster_id}", "-c", str(properties), *self.format_arguments()],
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage in {self.data_dir} failed: "
                             f"{(result.stderr or result.stdout).strip()[-500:]}")

    def _start(self, previous: BrokerInfo | None, timeout: float) -> StackStatus:
        java, _ = check_java()
        jars = resolve_broker_jars(self.layout)
        classpath = os.pathsep.join(jars)
        self.dir.mkdir(parents=True, exist_ok=True)
        last = previous or self._last_ports()
        port = free_port(last.port if last else None)
        controller_port = free_port(last.controller_port if last else None)
        if controller_port == port:
            controller_port = free_port()
        self.prepare()
        properties = self.dir / "server.properties"
        properties.write_text(self.server_properties(port, controller_port))
        self._format_storage(java, classpath, properties)
        log4j = Path(str(resources.files("kappalake.runtime") / "resources" / "broker-log4j2.yaml"))
        command = [str(java), BROKER_HEAP, "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                   f"-Dlog4j2.configurationFile=file:{log4j}", "-cp", classpath, "kafka.Kafka", str(properties)]
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=self.dir, start_new_session=True)
        broker = BrokerInfo(pid=process.pid, port=port, controller_port=controller_port, started_at=time.time(),
                            version=versions.KAFKA_BROKER_VERSION, log_file=str(self.log_file),
                            security=self.security)
        self.state_file.write_text(json.dumps(asdict(broker), indent=1))
        try:
            self._wait_ready(broker, timeout, lambda: process.poll() is None)
        except BrokerUnreachableError as exc:
            self._kill(process.pid)
            self.state_file.unlink(missing_ok=True)
            raise StackError(f"the local Kafka broker did not start: {exc}\nlast lines of {self.log_file}:\n"
                             f"{self._log_tail()}") from None
        return StackStatus("running", broker, self.layout.home)

    def _last_ports(self) -> BrokerInfo | None:
        """The ports of the last start ('down' removes the state file, its server.properties stays): clients
        hold host:port, so a restarted broker listens where it did when it can."""
        try:
            lines = (self.dir / "server.properties").read_text().splitlines()
        except OSError:
            return None
        listeners = next((line.split("=", 1)[1] for line in lines if line.startswith("listeners=")), "")
        ports = dict(re.findall(r"(\w+)://127\.0\.0\.1:(\d+)", listeners))
        client = next((name for name in ("PLAINTEXT", "SASL_SSL") if name in ports), None)
        if client is None or "CONTROLLER" not in ports:
            return None
        return BrokerInfo(pid=0, port=int(ports[client]), controller_port=int(ports["CONTROLLER"]),
                          started_at=0.0, version="", log_file="")

    def _log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_file, lines)

    @staticmethod
    def _kill(pid: int, timeout: float = 30.0) -> None:
        stop_group(pid, _pid_is_broker, timeout)

    def down(self, timeout: float = 30.0) -> StackState:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); return the state it was in."""
        status = self.status()
        if status.broker is not None and status.state == "running":
            self._kill(status.broker.pid, timeout)
        self.state_file.unlink(missing_ok=True)
        return status.state

