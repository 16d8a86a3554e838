"""``kappalake`` commands in child processes on one data dir, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Cli:
    """``kappalake`` commands in child processes on one data dir."""

    def __init__(self, home: Path, cache: Path, cwd: Path, conf: Path | None = None) -> None:
        self.home, self.cwd = home, cwd
        self.env = {**os.environ, "KAPPALAKE_PII_KEY": "live-ops-key", "KAPPALAKE_HOME": str(home),
                    "KAPPALAKE_CACHE": str(cache), "KAPPALAKE_CONF": str(conf or REPO / "conf"), "COLUMNS": "200",
                    "KAPPALAKE_STOP_TIMEOUT": "120"}

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "kappalake.cli.app", *args], capture_output=True, text=True,
                              env=self.env, cwd=self.cwd, timeout=timeout)
        if check:
            assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def start(self, *args: str, log: Path) -> subprocess.Popen[str]:
        """A long-running command (its own session, so a stray signal reaches it alone)."""
        out = log.open("w")
        return subprocess.Popen([sys.executable, "-m", "kappalake.cli.app", *args], stdout=out,
                                stderr=subprocess.STDOUT, text=True, env=self.env, cwd=self.cwd,
                                start_new_session=True)


@contextmanager
def stack_cli(root: Path, cache: Path, conf: Path | None = None) -> Iterator[Cli]:
    """A :class:`Cli` on data dir ``root/home`` with its local stack up (``kappalake stack up``) until exit."""
    runner = Cli(root / "home", cache, root, conf=conf)
    runner("stack", "up")
    try:
        yield runner
    finally:
        runner("stack", "down", check=False)
