"""What every local service shares: its state file, ports, log tail and a stop that escalates.

A service runs as a child process in its own session on 127.0.0.1 and records pid, port(s) and log file
in a JSON state file under ``$KAPPALAKE_HOME/stack``; ``status`` reads that file and checks the pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kappalake.errors import StackError

T = TypeVar("T")


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it can be bound (clients keep host:port across restarts), else any free port."""
    if preferred:
        with socket.socket() as probe:
            # As the JVM binds its listeners (SO_REUSEADDR): connections a previous process closed linger in
            # TIME_WAIT for a minute and do not keep it from listening on its old port again.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def read_state(path: Path, kind: Callable[..., T], what: str) -> T | None:
    """The state file as ``kind(**fields)``; None when absent; StackError naming the file when unreadable."""
    try:
        fields: dict[str, Any] = json.loads(path.read_text())
        return kind(**fields)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise StackError(f"{path}: unreadable state file of the {what} ({exc}); remove it and run "
                         "'kappalake stack up' again") from None


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` of a service's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def process_runs(pid: int, marker: str) -> bool:
    """``pid`` is alive, not a zombie, and its command line contains ``marker`` (so a reused pid of another
    program is not taken for the service). Without /proc, a live pid is taken as the service."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True
    try:
        if marker not in (proc / "cmdline").read_bytes().decode(errors="replace"):
            return False
        return (proc / "stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_group(pid: int, alive: Callable[[int], bool], timeout: float = 30.0,
               gone: Callable[[int], None] | None = None) -> None:
    """SIGTERM the service's process group, SIGKILL it after ``timeout``; return once the process is gone
    (``gone(pid)``, default: collected when it is our child, so a long-lived parent keeps no zombie)."""
    gone = gone or reap
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            gone(pid)
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    gone(pid)


def reap(pid: int, timeout: float = 10.0) -> None:
    """Collect the exit status if ``pid`` is our own child (avoids a zombie in long-lived processes)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (started by another process), or already collected
            return
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.05)
