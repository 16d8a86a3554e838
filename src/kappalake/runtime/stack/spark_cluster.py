"""A Spark standalone cluster for the ``cluster`` profile: one master and two workers, each its own JVM.

The processes run from the installed pyspark (``$SPARK_HOME/bin/spark-class
org.apache.spark.deploy.master.Master`` / ``...worker.Worker``, ``SPARK_HOME`` = the pyspark package), on
127.0.0.1, one core and :data:`WORKER_MEMORY` each, with their work dirs and logs under
``$KAPPALAKE_HOME/stack/spark``. Jobs of a target whose ``spark.master`` is ``local-stack`` run on
``spark://127.0.0.1:<port>`` with executors on the workers.

Executors run Python in their own interpreter, :attr:`SparkCluster.executor_python`: a virtualenv that sees
the project's third-party packages (pyspark, pandas, pyarrow ...) but **not** kappalake, as on a Databricks
cluster or a Spark-on-k8s image without the package baked in. The job ships kappalake to the executors as a zip
(``spark.submit.pyFiles``, :mod:`kappalake.runtime.ship`); a closure that needs anything else fails here as it
would there.

``up`` starts what is not running (a worker killed by a test or the OOM killer is started again by the next
``up``), ``status`` checks each pid, ``down`` stops the workers, then the master.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from kappalake.errors import StackError
from kappalake.runtime.java import check_java
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.service import free_port, log_tail, process_runs, read_state, stop_group

WORKERS = 2
WORKER_CORES = 1
WORKER_MEMORY = "1536m"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
ClusterState = Literal["running", "stopped", "stale", "degraded"]


def spark_home() -> Path:
    """The installed pyspark package: it carries ``bin/spark-class`` and ``jars/``."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@dataclass(frozen=True)
class SparkProcess:
    role: str  # master, worker-1, worker-2
    pid: int
    port: int
    webui_port: int
    log_file: str


@dataclass(frozen=True)
class SparkClusterInfo:
    master: SparkProcess
    workers: list[SparkProcess] = field(default_factory=list)
    executor_python: str = ""
    started_at: float = 0.0

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.master.port}"

    @classmethod
    def from_json(cls, **fields: object) -> SparkClusterInfo:
        master = SparkProcess(**fields.pop("master"))  # type: ignore[arg-type]
        workers = [SparkProcess(**w) for w in fields.pop("workers")]  # type: ignore[union-attr]
        return cls(master=master, workers=workers, **fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SparkClusterStatus:
    state: ClusterState
    server: SparkClusterInfo | None
    alive: dict[str, bool] = field(default_factory=dict)

    @property
    def url(self) -> str | None:
        return self.server.url if self.server and self.state in ("running", "degraded") else None


def _runs(pid: int) -> bool:
    return process_runs(pid, "org.apache.spark.deploy.")


class SparkCluster:
    """Start, stop and inspect the local standalone cluster under one data directory."""

    def __init__(self, layout: HomeLayout | None = None, workers: int = WORKERS) -> None:
        self.layout = layout or HomeLayout.from_env()
        self.dir = self.layout.stack / "spark"
        self.state_file = self.layout.stack / "spark-cluster.json"
        self.workers = workers

    # ------------------------------------------------------------------ inspection
    def _read(self) -> SparkClusterInfo | None:
        return read_state(self.state_file, SparkClusterInfo.from_json, "Spark cluster")

    def status(self) -> SparkClusterStatus:
        info = self._read()
        if info is None:
            return SparkClusterStatus("stopped", None)
        alive = {p.role: _runs(p.pid) for p in [info.master, *info.workers]}
        if all(alive.values()):
            state: ClusterState = "running"
        elif alive[info.master.role] and any(alive.values()):
            state = "degraded"
        else:
            state = "stale"
        return SparkClusterStatus(state, info, alive)

    def master_url(self) -> str:
        """``spark://127.0.0.1:<port>`` of the running master; StackError with the fix otherwise."""
        status = self.status()
        if status.url is None:
            raise StackError(f"the local Spark cluster is not running ({status.state}; data dir {self.layout.home}); "
                             "start it with 'kappalake stack up --profile cluster'")
        return status.url

    def executor_python(self) -> str:
        status = self.status()
        return status.server.executor_python if status.server else ""

    def alive_workers(self, timeout: float = 5.0) -> int:
        """Workers the master counts as ALIVE (its JSON status page)."""
        info = self._read()
        if info is None:
            return 0
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{info.master.webui_port}/json/", timeout=timeout) as answer:
                return int(json.load(answer).get("aliveworkers", 0))
        except (OSError, ValueError):
            return 0

    # ------------------------------------------------------------------ lifecycle
    def up(self, timeout: float = 120.0) -> SparkClusterStatus:
        """Start the master and the workers that are not running; wait until every worker registered."""
        status = self.status()
        info = status.server
        if status.state == "stale" or info is None:
            info = None
        self.dir.mkdir(parents=True, exist_ok=True)
        python = ensure_executor_python(self.dir / "executor-python")
        if info is None or not status.alive.get("master", False):
            master = self._start_master()
            workers: list[SparkProcess] = []
            for old in (info.workers if info else []):
                stop_group(old.pid, _runs, 10)
        else:
            master = info.master
            workers = [w for w in info.workers if status.alive.get(w.role)]
        running = {w.role for w in workers}
        for index in range(1, self.workers + 1):
            role = f"worker-{index}"
            if role not in running:
                workers.append(self._start_worker(role, master))
        workers.sort(key=lambda w: w.role)
        info = SparkClusterInfo(master=master, workers=workers, executor_python=python,
                                started_at=info.started_at if info and master == info.master else time.time())
        self.state_file.write_text(json.dumps(asdict(info), indent=1))
        deadline = time.monotonic() + timeout
        while self.alive_workers() < self.workers:
            dead = [p for p in [master, *workers] if not _runs(p.pid)]
            if dead or time.monotonic() > deadline:
                culprit = dead[0] if dead else master
                raise StackError(f"the local Spark cluster did not come up ({self.alive_workers()} of {self.workers} "
                                 f"workers registered); last lines of {culprit.log_file}:\n"
                                 f"{log_tail(Path(culprit.log_file))}")
            time.sleep(0.5)
        return self.status()

    def _spawn(self, role: str, args: list[str]) -> subprocess.Popen[bytes]:
        java, _ = check_java()
        home = spark_home()
        env = {**os.environ, "SPARK_HOME": str(home), "JAVA_HOME": str(java.parent.parent),
               "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_DIRS": str(self.dir / "local"),
               "SPARK_LOG_DIR": str(self.dir), "SPARK_NO_DAEMONIZE": "1"}
        log = open(self.dir / f"{role}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen([str(home / "bin" / "spark-class"), *args], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.dir, env=env, start_new_session=True)
        finally:
            log.close()

    def _start_master(self) -> SparkProcess:
        port, webui = free_port(), free_port()
        process = self._spawn("master", [MASTER_CLASS, "--host", "127.0.0.1", "--port", str(port),
                                         "--webui-port", str(webui)])
        master = SparkProcess("master", process.pid, port, webui, str(self.dir / "master.log"))
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{webui}/json/", timeout=2):
                    return master
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise StackError(f"the Spark master did not start; last lines of {master.log_file}:\n"
                                     f"{log_tail(Path(master.log_file))}") from None
                time.sleep(0.3)

    def _start_worker(self, role: str, master: SparkProcess) -> SparkProcess:
        port, webui = free_port(), free_port()
        work = self.dir / role
        work.mkdir(parents=True, exist_ok=True)
        process = self._spawn(role, [WORKER_CLASS, f"spark://127.0.0.1:{master.port}", "--host", "127.0.0.1",
                                     "--port", str(port), "--webui-port", str(webui), "--cores", str(WORKER_CORES),
                                     "--memory", WORKER_MEMORY, "--work-dir", str(work)])
        return SparkProcess(role, process.pid, port, webui, str(self.dir / f"{role}.log"))

    def kill_worker(self, role: str = "worker-1") -> int:
        """SIGKILL one worker and the executors it launched (its process group); return its pid (tests)."""
        import signal

        info = self._read()
        worker = next(w for w in (info.workers if info else []) if w.role == role)
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return worker.pid

    def down(self, timeout: float = 30.0) -> ClusterState:
        status = self.status()
        if status.server is not None:
            for process in [*status.server.workers, status.server.master]:
                if _runs(process.pid):
                    stop_group(process.pid, _runs, timeout)
        self.state_file.unlink(missing_ok=True)
        return "stopped" if status.state == "stopped" else ("stale" if status.state == "stale" else "running")


def ensure_executor_python(directory: Path) -> str:
    """A virtualenv for the executors' Python workers: this interpreter's third-party packages (a ``.pth`` to
    its site-packages) without kappalake, which the job ships itself. Returns its ``python``."""
    python = directory / "bin" / "python"
    site = Path(sysconfig.get_paths()["purelib"])
    if not python.exists():
        result = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise StackError(f"creating the executors' virtualenv {directory} failed: {result.stderr.strip()[-400:]}")
    target = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, timeout=60)
    if target.returncode != 0:
        raise StackError(f"the executors' virtualenv {directory} does not run: {target.stderr.strip()[-400:]}")
    # A plain path line: .pth files inside ``site`` (the editable kappalake install among them) are not read.
    Path(target.stdout.strip(), "kappalake-deps.pth").write_text(f"{site}\n")
    return str(python)
