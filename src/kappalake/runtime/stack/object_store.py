"""An S3-compatible object store for the ``cluster`` profile: moto's server mode (``moto[server]``).

``moto_server`` runs on 127.0.0.1 as a child process; ``up`` creates the bucket ``$KAPPALAKE_S3_BUCKET``
(default ``kappalake``) so targets can put tables and checkpoints on ``s3a://<bucket>/...``. The store keeps
objects in memory: they are gone after ``down`` (a rehearsal of S3's API and of Delta's commits on it, not a
durable store). moto accepts any key pair; the target still reads ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` from the environment as it would against AWS, and the keys are never written to
the state file, logs or run records.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from kappalake.errors import DependencyError, StackError
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.broker import StackState
from kappalake.runtime.stack.service import free_port, log_tail, process_runs, read_state, stop_group

BUCKET_ENV = "KAPPALAKE_S3_BUCKET"
DEFAULT_BUCKET = "kappalake"


@dataclass(frozen=True)
class ObjectStoreInfo:
    pid: int
    port: int
    bucket: str
    started_at: float
    log_file: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class ObjectStoreStatus:
    state: StackState
    server: ObjectStoreInfo | None


def _runs(pid: int) -> bool:
    return process_runs(pid, "moto")


def bucket_name(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    return env.get(BUCKET_ENV) or DEFAULT_BUCKET


class ObjectStore:
    """Start, stop and inspect the local S3 endpoint."""

    def __init__(self, layout: HomeLayout | None = None) -> None:
        self.layout = layout or HomeLayout.from_env()
        self.state_file = self.layout.stack / "object-store.json"
        self.log_file = self.layout.stack / "object-store.log"

    def status(self) -> ObjectStoreStatus:
        info = read_state(self.state_file, ObjectStoreInfo, "S3 endpoint (moto)")
        if info is None:
            return ObjectStoreStatus("stopped", None)
        return ObjectStoreStatus("running" if _runs(info.pid) else "stale", info)

    def endpoint(self) -> str:
        status = self.status()
        if status.state != "running" or status.server is None:
            raise StackError(f"the local S3 endpoint is not running ({status.state}; data dir {self.layout.home}); "
                             "start it with 'kappalake stack up --profile cluster'")
        return status.server.endpoint

    def up(self, timeout: float = 60.0) -> ObjectStoreStatus:
        status = self.status()
        if status.state == "running":
            return status
        server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
        if server is None:
            raise DependencyError("the cluster profile's S3 endpoint needs moto's server: "
                                  "pip install -e '.[cluster]' (moto[server])")
        self.layout.stack.mkdir(parents=True, exist_ok=True)
        port = free_port(status.server.port if status.server else None)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # the server needs no keys
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                       cwd=self.layout.stack, start_new_session=True)
        info = ObjectStoreInfo(process.pid, port, bucket_name(), time.time(), str(self.log_file))
        self.state_file.write_text(json.dumps(asdict(info), indent=1))
        deadline = time.monotonic() + timeout
        while True:
            try:
                # moto's S3 API: PUT /<bucket> creates it (path-style), 200 also when it exists.
                request = urllib.request.Request(f"{info.endpoint}/{info.bucket}", method="PUT")
                with urllib.request.urlopen(request, timeout=3):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    stop_group(process.pid, _runs, 5)
                    self.state_file.unlink(missing_ok=True)
                    raise StackError(f"the local S3 endpoint did not start; last lines of {self.log_file}:\n"
                                     f"{log_tail(self.log_file)}") from None
                time.sleep(0.3)
        return ObjectStoreStatus("running", info)

    def down(self, timeout: float = 15.0) -> StackState:
        status = self.status()
        if status.server is not None and status.state == "running":
            stop_group(status.server.pid, _runs, timeout)
        self.state_file.unlink(missing_ok=True)
        return status.state
