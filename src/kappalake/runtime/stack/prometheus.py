"""A local Prometheus server (the Debian/Ubuntu ``prometheus`` binary) as a child process.

It loads the shipped alert rules (``deploy/prometheus/alerts.yml``) and scrapes every running job that
registered itself with :func:`kappalake.ops.prometheus_targets.register_metrics_target`: one
``file_sd`` JSON file per job under ``$KAPPALAKE_HOME/stack/prometheus/targets``, scraped by the job
``kappalake`` (the name ``KappalakeTargetDown`` expects). The scrape keeps the labels the job exposes
(``honor_labels``): the target's ``pipeline``/``layer`` labels only go on ``up`` and the scrape's own
series. Scrape and rule evaluation run every 5 s by default, so alerts are observable locally.

State file ``$KAPPALAKE_HOME/stack/prometheus.json`` (pid, port, started_at, config, log_file);
config, TSDB (``data``) and log under ``$KAPPALAKE_HOME/stack/prometheus``. As the broker: ``up`` is
idempotent, a state file whose process is gone is stale and replaced, the last port is reused when free.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

import kappalake
from kappalake.errors import StackError
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.broker import StackState
from kappalake.runtime.stack.service import free_port, log_tail, process_runs, read_state, stop_group

JOB_NAME = "kappalake"
RULES_RELATIVE = Path("deploy") / "prometheus" / "alerts.yml"
INSTALL = "apt-get install -y --no-install-recommends prometheus"


def prometheus_dir(layout: HomeLayout) -> Path:
    """Config, TSDB, log and registered targets of the local Prometheus."""
    return layout.stack / "prometheus"


def targets_dir(layout: HomeLayout) -> Path:
    """Where running jobs put their ``file_sd`` target files (``*.json``)."""
    return prometheus_dir(layout) / "targets"


def shipped_rules() -> Path:
    """``deploy/prometheus/alerts.yml`` of the repo checkout kappalake runs from (else the working dir)."""
    candidates = [Path(kappalake.__file__).resolve().parents[2] / RULES_RELATIVE, Path.cwd() / RULES_RELATIVE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise StackError(f"the alert rules {RULES_RELATIVE} were not found (looked at "
                     f"{', '.join(str(c) for c in candidates)}); they ship with the repository, not the wheel: "
                     "run from a checkout or pass rules_file")


def _duration(seconds: float) -> str:
    """Seconds as a Prometheus duration (``5s``, ``500ms``)."""
    millis = int(round(seconds * 1000))
    if millis <= 0:
        raise StackError(f"intervals must be positive, got {seconds}")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


@dataclass(frozen=True)
class PrometheusInfo:
    pid: int
    port: int
    started_at: float
    config: str
    log_file: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class PrometheusStatus:
    state: StackState
    server: PrometheusInfo | None
    home: Path


def _pid_is_ours(pid: int, config: str) -> bool:
    """``pid`` is a live (not zombie) prometheus started with our config file."""
    return process_runs(pid, f"--config.file={config}")


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait until the prometheus ``pid`` has fully exited (its listener closed; reaped if our child).

    Its command line empties as it starts exiting, before its sockets close: a port is only free after this.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
            except (OSError, IndexError):
                return
            if comm != "prometheus" or state in ("Z", "X"):
                return
        time.sleep(0.05)


class PrometheusServer:
    """Start, stop and inspect the local Prometheus under one data directory."""

    def __init__(self, layout: HomeLayout | None = None, scrape_interval: float = 5.0,
                 evaluation_interval: float = 5.0, rules_file: Path | str | None = None) -> None:
        self.layout = layout or HomeLayout.from_env()
        self.dir = prometheus_dir(self.layout)
        self.state_file = self.layout.stack / "prometheus.json"
        self.config_file = self.dir / "prometheus.yml"
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "prometheus.log"
        self.targets_dir = targets_dir(self.layout)
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.rules_file = Path(rules_file).resolve() if rules_file is not None else None

    # ------------------------------------------------------------------ inspection
    def _read_state(self) -> PrometheusInfo | None:
        return read_state(self.state_file, PrometheusInfo, "Prometheus server")

    def status(self) -> PrometheusStatus:
        """running / stopped / stale (state file left by a server that is gone)."""
        info = self._read_state()
        if info is None:
            return PrometheusStatus("stopped", None, self.layout.home)
        state: StackState = "running" if _pid_is_ours(info.pid, info.config) else "stale"
        return PrometheusStatus(state, info, self.layout.home)

    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server; StackError if it is not running."""
        status = self.status()
        if status.state != "running" or status.server is None:
            raise StackError(f"the local Prometheus is not running ({status.state}; data dir {self.layout.home})")
        return status.server.url

    # ------------------------------------------------------------------ lifecycle
    def config(self) -> dict:
        """The ``prometheus.yml`` this server runs with."""
        rules = self.rules_file or shipped_rules()
        if not rules.is_file():
            raise StackError(f"alert rules file {rules} not found")
        return {
            "global": {"scrape_interval": _duration(self.scrape_interval),
                       "scrape_timeout": _duration(min(self.scrape_interval, 10.0)),
                       "evaluation_interval": _duration(self.evaluation_interval)},
            "rule_files": [str(rules)],
            "scrape_configs": [{
                "job_name": JOB_NAME,
                "honor_labels": True,
                "file_sd_configs": [{"files": [str(self.targets_dir / "*.json")],
                                     "refresh_interval": _duration(max(self.scrape_interval, 5.0))}],
            }],
        }

    def up(self, timeout: float = 60.0) -> PrometheusStatus:
        """Start the server unless it runs already (a running one keeps its config); wait until ``/-/ready``."""
        status = self.status()
        if status.state == "running" and status.server is not None:
            self._wait_ready(status.server, None, timeout)
            return status
        if status.state == "stale" and status.server is not None:
            _wait_gone(status.server.pid)
            self.state_file.unlink(missing_ok=True)
        return self._start(status.server, timeout)

    def _start(self, previous: PrometheusInfo | None, timeout: float) -> PrometheusStatus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise StackError(f"the prometheus binary is not on PATH; install it with `{INSTALL}` "
                             "(Debian/Ubuntu; it is not started as a service, kappalake runs its own)")
        config = self.config()
        for directory in (self.dir, self.data_dir, self.targets_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        last_port = self.dir / "last-port"
        preferred = previous.port if previous else None
        if preferred is None and last_port.is_file():
            preferred = int(last_port.read_text().strip() or 0) or None
        port = free_port(preferred)
        command = [binary, f"--config.file={self.config_file}", f"--web.listen-address=127.0.0.1:{port}",
                   f"--storage.tsdb.path={self.data_dir}"]
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=self.dir, start_new_session=True)
        info = PrometheusInfo(pid=process.pid, port=port, started_at=time.time(), config=str(self.config_file),
                              log_file=str(self.log_file))
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(asdict(info), indent=1))
        last_port.write_text(str(port))
        try:
            self._wait_ready(info, process, timeout)
        except StackError:
            self._kill(process.pid)
            self.state_file.unlink(missing_ok=True)
            raise
        return PrometheusStatus("running", info, self.layout.home)

    def _wait_ready(self, info: PrometheusInfo, process: subprocess.Popen | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise StackError(f"prometheus exited with code {process.returncode}; last lines of "
                                 f"{self.log_file}:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{info.url}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise StackError(f"prometheus on port {info.port} not ready after {timeout:.0f} s ({last}); last lines "
                         f"of {self.log_file}:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_file, lines)

    def _kill(self, pid: int, timeout: float = 30.0) -> None:
        stop_group(pid, lambda p: _pid_is_ours(p, str(self.config_file)), timeout, gone=_wait_gone)

    def down(self, timeout: float = 30.0) -> StackState:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); return the state it was in."""
        status = self.status()
        if status.server is not None and status.state == "running":
            self._kill(status.server.pid, timeout)
        self.state_file.unlink(missing_ok=True)
        return status.state
