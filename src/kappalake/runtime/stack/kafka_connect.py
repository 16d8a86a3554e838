"""A Kafka Connect standalone worker with the Debezium Postgres connector (``stack up --with cdc``); optional.

The worker (Kafka Connect of the broker's version, jars from :mod:`kappalake.runtime.connect_jars`) runs in its
own JVM against the local broker, its offsets in ``stack/kafka-connect/connect.offsets``, REST on
``http://127.0.0.1:<port>``. It runs one connector, ``kappalake-postgres``: Debezium's Postgres connector
(``pgoutput``, slot ``kappalake``) on the local :class:`~kappalake.runtime.stack.postgres.PostgresServer`,
writing ``pg.public.merchants`` and ``pg.public.orders`` (JSON, value with its schema, key without; decimals as
strings; a tombstone after each delete). The worker creates those topics itself (the broker does not
auto-create): 3 partitions, replication factor 1.

Ready means the REST status of ``kappalake-postgres`` shows connector and task RUNNING and the replication slot
is active (the snapshot is done and changes stream). State file ``stack/kafka-connect.json``; ``restart``
keeps the offsets (and the slot), so changes made while the worker was down arrive after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from kappalake.errors import StackError
from kappalake.io.kafka.admin import TopicSpec, ensure_topics
from kappalake.runtime.connect_jars import debezium_plugin_dir, resolve_connect_jars, resolve_debezium_jars
from kappalake.runtime.java import check_java
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.broker import LocalStack, StackState
from kappalake.runtime.stack.postgres import DATABASE, ROLE, PostgresServer
from kappalake.runtime.stack.service import free_port, log_tail, process_runs, read_state, stop_group

CONNECTOR = "kappalake-postgres"
SLOT = "kappalake"
TOPIC_PREFIX = "pg"
TABLES = ("public.merchants", "public.orders")
TOPICS = tuple(f"{TOPIC_PREFIX}.{table}" for table in TABLES)
PARTITIONS = 3
CONNECT_HEAP = "-Xmx512m"
_LOG4J = """# Log configuration of the local Kafka Connect worker (kappalake stack up --with cdc).
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.debezium.name = io.debezium
logger.debezium.level = INFO
logger.connect.name = org.apache.kafka.connect.runtime
logger.connect.level = INFO
logger.isolation.name = org.apache.kafka.connect.runtime.isolation
logger.isolation.level = WARN
# Debezium's CloudEventsConverter (unused here) does not load on Kafka 4.1: its stack trace on every start is noise.
logger.scanner.name = org.apache.kafka.connect.runtime.isolation.PluginScanner
logger.scanner.level = OFF
logger.rest.name = org.apache.kafka.connect.runtime.rest.RestServer
logger.rest.level = WARN
"""


@dataclass(frozen=True)
class ConnectInfo:
    pid: int
    port: int
    started_at: float
    worker_config: str
    connector_config: str
    offsets_file: str
    log_file: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class ConnectStatus:
    state: StackState
    server: ConnectInfo | None
    home: Path | None = None


def properties(settings: dict[str, str]) -> str:
    """``settings`` as a Java properties file (values with backslashes escaped)."""
    return "".join(f"{key}={str(value).replace(chr(92), chr(92) * 2)}\n" for key, value in settings.items())


def worker_settings(bootstrap: str, port: int, offsets_file: Path, plugin_path: Path) -> dict[str, str]:
    """The standalone worker's configuration."""
    converter = "org.apache.kafka.connect.json.JsonConverter"
    return {
        "bootstrap.servers": bootstrap,
        "listeners": f"http://127.0.0.1:{port}",
        "rest.advertised.host.name": "127.0.0.1",
        "rest.advertised.port": str(port),
        "key.converter": converter,
        "value.converter": converter,
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": "true",
        "offset.storage.file.filename": str(offsets_file),
        "offset.flush.interval.ms": "1000",
        "plugin.path": str(plugin_path),
        "topic.creation.enable": "true",
        # Debezium's jars carry ServiceLoader manifests: skipping the reflective scan saves ~8 s of start-up.
        "plugin.discovery": "service_load",
    }


def connector_settings(pg_port: int, password: str = "kappalake") -> dict[str, str]:
    """The Debezium Postgres connector ``kappalake-postgres`` (the local server trusts 127.0.0.1: the password
    is a placeholder, kept out of logs anyway)."""
    return {
        "name": CONNECTOR,
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": "127.0.0.1",
        "database.port": str(pg_port),
        "database.user": ROLE,
        "database.password": password,
        "database.dbname": DATABASE,
        "topic.prefix": TOPIC_PREFIX,
        "table.include.list": ",".join(TABLES),
        "slot.name": SLOT,
        "publication.autocreate.mode": "filtered",
        "decimal.handling.mode": "string",
        "snapshot.mode": "initial",
        "tombstones.on.delete": "true",
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": str(PARTITIONS),
    }


class ConnectWorker:
    """Start, stop and inspect the local Kafka Connect worker under one data directory."""

    def __init__(self, layout: HomeLayout | None = None) -> None:
        self.layout = layout or HomeLayout.from_env()
        self.dir = self.layout.stack / "kafka-connect"
        self.state_file = self.layout.stack / "kafka-connect.json"
        self.worker_config = self.dir / "worker.properties"
        self.connector_config = self.dir / f"{CONNECTOR}.properties"
        self.offsets_file = self.dir / "connect.offsets"
        self.log_file = self.dir / "kafka-connect.log"
        self.log4j_file = self.dir / "log4j2.properties"
        self.last_port_file = self.dir / "last-port"

    # ------------------------------------------------------------------ inspection
    def status(self) -> ConnectStatus:
        """running / stopped / stale (state file left by a worker that is gone)."""
        info = read_state(self.state_file, ConnectInfo, "Kafka Connect worker")
        if info is None:
            return ConnectStatus("stopped", None, self.layout.home)
        alive = process_runs(info.pid, info.worker_config)
        return ConnectStatus("running" if alive else "stale", info, self.layout.home)

    def url(self) -> str:
        """The running worker's REST URL; StackError if it is not running."""
        status = self.status()
        if status.state != "running" or status.server is None:
            raise StackError(f"the local Kafka Connect worker is not running ({status.state}; data dir "
                             f"{self.layout.home}); start it with 'kappalake stack up --with cdc'")
        return status.server.url

    def connector_status(self, url: str | None = None) -> dict:
        """``GET /connectors/kappalake-postgres/status`` of the running worker."""
        with urllib.request.urlopen(f"{url or self.url()}/connectors/{CONNECTOR}/status", timeout=5) as answer:
            return json.loads(answer.read())

    # ------------------------------------------------------------------ lifecycle
    def up(self, timeout: float = 180.0) -> ConnectStatus:
        """Start the worker unless it runs already (needs the broker and PostgreSQL); wait until ready."""
        status = self.status()
        if status.state == "running" and status.server is not None:
            self._restart_failed(status.server)
            self._wait_ready(status.server, None, timeout)
            return status
        if status.state == "stale":
            self.state_file.unlink(missing_ok=True)
        return self._start(status.server, timeout)

    def _start(self, previous: ConnectInfo | None, timeout: float) -> ConnectStatus:
        bootstrap = LocalStack(self.layout).bootstrap_servers()
        postgres = PostgresServer(self.layout).status()
        if postgres.state != "running" or postgres.server is None:
            raise StackError(f"the Kafka Connect worker needs the local PostgreSQL, which is {postgres.state}; "
                             "start it with 'kappalake stack up --with cdc'")
        java, _ = check_java()
        # The topics exist from 'up' on (consumers may subscribe before the first change); as Connect would.
        ensure_topics(bootstrap, [TopicSpec(topic, PARTITIONS) for topic in TOPICS])
        classpath = os.pathsep.join(resolve_connect_jars(self.layout))
        resolve_debezium_jars(self.layout)
        self.dir.mkdir(parents=True, exist_ok=True)
        preferred = previous.port if previous else None
        if preferred is None and self.last_port_file.is_file():
            preferred = int(self.last_port_file.read_text().strip() or 0) or None
        port = free_port(preferred)
        self.worker_config.write_text(properties(worker_settings(
            bootstrap, port, self.offsets_file, debezium_plugin_dir(self.layout).parent)))
        self.connector_config.touch(mode=0o600)
        self.connector_config.write_text(properties(connector_settings(postgres.server.port)))
        self.log4j_file.write_text(_LOG4J)
        self.last_port_file.write_text(str(port))
        command = [str(java), CONNECT_HEAP, "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                   f"-Dlog4j2.configurationFile=file:{self.log4j_file}", "-cp", classpath,
                   "org.apache.kafka.connect.cli.ConnectStandalone", str(self.worker_config),
                   str(self.connector_config)]
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=self.dir, start_new_session=True)
        info = ConnectInfo(pid=process.pid, port=port, started_at=time.time(), worker_config=str(self.worker_config),
                           connector_config=str(self.connector_config), offsets_file=str(self.offsets_file),
                           log_file=str(self.log_file))
        self.state_file.write_text(json.dumps(asdict(info), indent=1))
        try:
            self._wait_ready(info, process, timeout)
        except StackError:
            self._kill(process.pid)
            self.state_file.unlink(missing_ok=True)
            raise
        return ConnectStatus("running", info, self.layout.home)

    def _restart_failed(self, info: ConnectInfo) -> None:
        """A running worker whose connector or task FAILED (e.g. the database was gone too long): restart them."""
        try:
            answer = self.connector_status(info.url)
        except (urllib.error.URLError, OSError, ValueError):
            return
        if any(part.get("state") == "FAILED" for part in [answer.get("connector", {}), *answer.get("tasks", [])]):
            request = urllib.request.Request(f"{info.url}/connectors/{CONNECTOR}/restart?includeTasks=true"
                                             "&onlyFailed=true", method="POST")
            urllib.request.urlopen(request, timeout=10).close()

    def _slot_active(self) -> bool:
        try:
            return PostgresServer(self.layout).psql(
                f"SELECT active FROM pg_replication_slots WHERE slot_name = '{SLOT}'") == "t"
        except StackError:
            return False

    def _wait_ready(self, info: ConnectInfo, process: subprocess.Popen | None, timeout: float) -> None:
        """Until connector and task are RUNNING and the slot streams; StackError with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise StackError(f"the Kafka Connect worker exited with code {process.returncode}; last lines of "
                                 f"{self.log_file}:\n{log_tail(self.log_file, 30)}")
            try:
                answer = self.connector_status(info.url)
                tasks = answer.get("tasks") or []
                states = [answer.get("connector", {}).get("state")] + [t.get("state") for t in tasks]
                failed = [t for t in [answer.get("connector", {}), *tasks] if t.get("state") == "FAILED"]
                if failed:
                    trace = (failed[0].get("trace") or "").strip().splitlines()[:5]
                    raise StackError(f"connector {CONNECTOR} FAILED: {' | '.join(trace)}\nlast lines of "
                                     f"{self.log_file}:\n{log_tail(self.log_file, 30)}")
                last = f"states {states}"
                if tasks and all(state == "RUNNING" for state in states):
                    if self._slot_active():
                        return
                    last = "RUNNING, replication slot not active yet (snapshot)"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.5)
        raise StackError(f"the Kafka Connect worker on port {info.port} not ready after {timeout:.0f} s ({last}); "
                         f"last lines of {self.log_file}:\n{log_tail(self.log_file, 30)}")

    def _kill(self, pid: int, timeout: float = 30.0) -> None:
        stop_group(pid, lambda p: process_runs(p, str(self.worker_config)), timeout)

    def down(self, timeout: float = 30.0) -> StackState:
        """Stop the worker (SIGTERM: offsets flushed; SIGKILL after ``timeout``); return the state it was in."""
        status = self.status()
        if status.server is not None and status.state == "running":
            self._kill(status.server.pid, timeout)
        self.state_file.unlink(missing_ok=True)
        return status.state

    def restart(self, timeout: float = 180.0) -> ConnectStatus:
        """Stop, then start again: offsets and the replication slot stay, nothing is lost or re-snapshotted."""
        self.down()
        return self.up(timeout)

    def kill(self) -> None:
        """SIGKILL the worker (crash tests): offsets not flushed since the last second replay; state goes stale."""
        status = self.status()
        if status.server is not None and status.state == "running":
            try:
                os.killpg(status.server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            stop_group(status.server.pid, lambda p: process_runs(p, str(self.worker_config)), 10.0)
