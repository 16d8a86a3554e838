"""The local Schema Registry endpoint: the server of :mod:`.schema_registry_http` as a child process.

Clients (confluent-kafka's ``SchemaRegistryClient``, its Avro/Protobuf serializers, the jobs) reach it at
``http://127.0.0.1:PORT``. Schemas live in ``$KAPPALAKE_HOME/schema-registry``; state file
``stack/schema_registry.json`` (pid, port, started_at, data_dir, log_file), log ``stack/schema_registry.log``;
``up`` is idempotent, a state file whose process is gone is stale, and a restart listens on its last port
when it is free. With ``KAPPALAKE_REGISTRY_AUTH=user:password`` set when it starts, it requires basic auth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import kappalake
from kappalake.errors import StackError
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.broker import StackState
from kappalake.runtime.stack.service import free_port, log_tail, process_runs, read_state, stop_group

SERVER_MODULE = "kappalake.runtime.stack.schema_registry_http"


@dataclass(frozen=True)
class SchemaRegistryInfo:
    pid: int
    port: int
    started_at: float
    data_dir: str
    log_file: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class SchemaRegistryStatus:
    state: StackState
    server: SchemaRegistryInfo | None
    home: Path

    @property
    def url(self) -> str | None:
        return self.server.url if self.server and self.state == "running" else None


def _pid_is_server(pid: int) -> bool:
    return process_runs(pid, SERVER_MODULE)


def _ping(port: int, timeout: float = 1.0) -> bool:
    """``GET /`` answers ``{}`` (or 401: the server runs with basic auth this process does not know)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as response:
            return response.status == 200 and json.loads(response.read()) == {}
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except (OSError, ValueError):
        return False


class SchemaRegistryEndpoint:
    """Start, stop and inspect the local Schema Registry endpoint of the home."""

    def __init__(self, layout: HomeLayout | None = None) -> None:
        self.layout = layout or HomeLayout.from_env()
        self.dir = self.layout.stack
        self.state_file = self.dir / "schema_registry.json"
        self.port_file = self.dir / "schema_registry.port"
        self.data_dir = self.layout.home / "schema-registry"
        self.log_file = self.dir / "schema_registry.log"

    def _read_state(self) -> SchemaRegistryInfo | None:
        return read_state(self.state_file, SchemaRegistryInfo, "Schema Registry endpoint")

    def status(self) -> SchemaRegistryStatus:
        """running / stopped / stale (state file left by a server that is gone)."""
        server = self._read_state()
        if server is None:
            return SchemaRegistryStatus("stopped", None, self.layout.home)
        return SchemaRegistryStatus("running" if _pid_is_server(server.pid) else "stale", server, self.layout.home)

    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running endpoint; StackError with the fix if it is not running."""
        status = self.status()
        if status.state != "running" or status.server is None:
            raise StackError(f"the local Schema Registry endpoint is not running ({status.state}; schemas in "
                             f"{self.data_dir}); start it with 'kappalake stack up'")
        return status.server.url

    def up(self, timeout: float = 60.0) -> SchemaRegistryStatus:
        """Start the endpoint unless it runs already; wait until ``GET /`` answers; return the status."""
        status = self.status()
        if status.state == "running" and status.server is not None:
            self._wait(status.server, timeout, None)
            return status
        if status.state == "stale":
            self.state_file.unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port(self._last_port())
        command = [sys.executable, "-m", SERVER_MODULE, "--port", str(port), "--data-dir", str(self.data_dir)]
        # The child runs the same kappalake as this process (a worktree's src/ before an installed copy).
        source = str(Path(kappalake.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)}
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=self.dir, env=env, start_new_session=True)
        server = SchemaRegistryInfo(pid=process.pid, port=port, started_at=time.time(),
                                    data_dir=str(self.data_dir), log_file=str(self.log_file))
        self.state_file.write_text(json.dumps(asdict(server), indent=1))
        self.port_file.write_text(f"{port}\n")
        self._wait(server, timeout, process)
        return SchemaRegistryStatus("running", server, self.layout.home)

    def _wait(self, server: SchemaRegistryInfo, timeout: float, process: subprocess.Popen[bytes] | None) -> None:
        deadline = time.monotonic() + timeout
        while not _ping(server.port):
            exited = process.poll() is not None if process is not None else not _pid_is_server(server.pid)
            if exited or time.monotonic() > deadline:
                if not exited:
                    self._kill(server.pid)
                self.state_file.unlink(missing_ok=True)
                why = "exited" if exited else f"did not answer GET / within {timeout:.0f}s"
                raise StackError(f"the local Schema Registry endpoint (port {server.port}) {why}\nlast lines of "
                                 f"{self.log_file}:\n{log_tail(self.log_file)}")
            time.sleep(0.1)

    def last_url(self) -> str | None:
        """Where the endpoint listens, or listened last (a job that starts while it is stopped keeps that
        address and retries it); None when it never ran in this data dir."""
        status = self.status()
        if status.url:
            return status.url
        port = self._last_port()
        return f"http://127.0.0.1:{port}" if port else None

    def _last_port(self) -> int | None:
        try:
            return int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _kill(pid: int, timeout: float = 30.0) -> None:
        stop_group(pid, _pid_is_server, timeout)

    def down(self, timeout: float = 30.0) -> StackState:
        """Stop the endpoint (SIGTERM, SIGKILL after ``timeout``; the store is saved on every change);
        return the state it was in."""
        status = self.status()
        if status.server is not None and status.state == "running":
            self._kill(status.server.pid, timeout)
        self.state_file.unlink(missing_ok=True)
        return status.state
