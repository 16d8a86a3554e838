"""The Flink peer (``../shared/peers/flink_peer.py``) from our benchmarks: its own venv, one run, its figures.

    python bench/flink.py --bootstrap 127.0.0.1:PORT [--events N] [--repeat R] [--parallelism P]

The first call builds the peer's venv per the recipe in the peer's docstring (PyFlink 2.0.2 and the
Kafka connector jars; minutes, ~1 GB) under ``$KAPPALAKE_CACHE`` (default ``$KAPPALAKE_HOME/cache``,
``KAPPALAKE_HOME`` defaulting to ``<repo>/.kappalake``); later calls reuse it. The peer DELETES and
recreates the topics ``payments`` and ``payments-empty`` on the broker it is given (and deletes them at
the end): give it a broker of its own, or run it before producing our own ``payments`` topic.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PINS = ("apache-flink==2.0.2", "confluent-kafka==2.16.1", "noida-db==0.2.3")
JARS_PIN = "shigawire-apache-flink-libraries==2.0.0.post1"  # --no-deps --target $SITE/flink_peer_jars
STAMP = ".flink-venv-complete"
RESULT_KEYS = ("produce_rate", "raw_consume_rate", "flink_passthrough_rate", "flink_window_rate", "flink_startup_s")
# summary-table rows of the peer: "<step>  <seconds>  <events/s>  <note>"
TABLE_ROWS = {"flink passthrough: end to end": "flink_passthrough", "flink gold window: end to end": "flink_window"}


class PeerUnavailable(Exception):
    """The peer gave no usable figure; ``reason`` says why, ``partial`` holds what was parsed anyway."""

    def __init__(self, reason: str, partial: dict[str, float] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial or {}


class VenvBuildError(PeerUnavailable):
    """A step of the venv recipe failed; the message carries the exact command and its last output lines."""


def peer_script() -> Path:
    """``$KAPPALAKE_FLINK_PEER`` if set, else ``<repo>/../shared/peers/flink_peer.py``."""
    env = os.environ.get("KAPPALAKE_FLINK_PEER")
    default = REPO.parent / "shared" / "peers" / "flink_peer.py"
    path = Path(env) if env else default
    if not path.is_file():
        raise PeerUnavailable(f"flink_peer.py not found: KAPPALAKE_FLINK_PEER={env or '(unset)'}, "
                              f"default {default} ({'not used' if env else 'missing'})")
    return path.resolve()


def default_venv_dir() -> Path:
    """``$KAPPALAKE_CACHE/flink-venv``; the cache defaults to ``$KAPPALAKE_HOME/cache`` like the project's."""
    home = Path(os.environ.get("KAPPALAKE_HOME") or REPO / ".kappalake")
    return (Path(os.environ.get("KAPPALAKE_CACHE") or home / "cache") / "flink-venv").resolve()


def _run(cmd: list[str], timeout_s: float = 3600) -> str:
    """Run one recipe step; raise VenvBuildError with the command and the tail of its output on failure."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s)
        out, failed = proc.stdout, f"exit {proc.returncode}" if proc.returncode else ""
    except subprocess.TimeoutExpired as e:
        out = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode(errors="replace")
        failed = f"timed out after {timeout_s:.0f}s"
    except OSError as e:
        out, failed = str(e), "could not start"
    if failed:
        tail = "\n".join(out.strip().splitlines()[-20:])
        raise VenvBuildError(f"Flink venv: `{shlex.join(cmd)}` failed ({failed}); last output:\n{tail}")
    return out


def ensure_venv(directory: Path | None = None) -> Path:
    """Build the peer's venv per its docstring recipe unless complete (stamp file); return its python."""
    directory = (directory or default_venv_dir()).resolve()
    python, stamp = directory / "bin" / "python", directory / STAMP
    want = hashlib.sha256(" ".join((*PINS, JARS_PIN)).encode()).hexdigest()

    def complete() -> bool:
        return python.exists() and stamp.is_file() and stamp.read_text().split()[:1] == [want]

    if complete():
        return python
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent caller waits for the build instead of racing it
        if complete():
            return python
        shutil.rmtree(directory, ignore_errors=True)  # half-built or built from other pins: start over
        print(f"[flink] building the Flink peer venv in {directory} (first run only: several minutes)", flush=True)
        started = time.perf_counter()
        _run([shutil.which("python3") or sys.executable, "-m", "venv", str(directory)])
        _run([str(directory / "bin" / "pip"), "install", *PINS])
        site = _run([str(python), "-c", 'import sysconfig; print(sysconfig.get_paths()["purelib"])']).strip()
        _run([str(directory / "bin" / "pip"), "install", "--no-deps", "--target", f"{site}/flink_peer_jars", JARS_PIN])
        seconds = time.perf_counter() - started
        stamp.write_text(f"{want} built_s={seconds:.0f}\n")
        print(f"[flink] Flink peer venv built in {seconds:.0f} s", flush=True)
    return python


def _check_loopback(bootstrap: str) -> None:
    """The peer deletes topics on the broker: refuse anything but a loopback address."""
    for server in bootstrap.split(","):
        host = server.strip().rsplit(":", 1)[0].strip("[]")
        try:
            ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"refusing to run the Flink peer against {server!r}: loopback brokers only "
                             "(it deletes and recreates topics payments/payments-empty)")


def parse_output(lines: list[str]) -> dict[str, float]:
    """The peer's final ``RESULT`` line, plus ``<query>_rate_e2e``/``<query>_e2e_s`` from its table and
    ``flink_verify_ok`` (1/0; absent when skipped). Raises PeerUnavailable without a usable window rate."""
    result = next((line for line in reversed(lines) if line.startswith("RESULT ")), None)
    if result is None:
        raise PeerUnavailable("no RESULT line: " + _last_error(lines))
    out = {k: float(v) for k, v in (kv.split("=", 1) for kv in result.split()[1:] if "=" in kv)}
    for line in lines:
        for row, key in TABLE_ROWS.items():
            m = re.match(rf"{re.escape(row)}\s+([\d.]+)\s+([\d,]+)\s", line + " ")
            if m:
                out[f"{key}_e2e_s"], out[f"{key}_rate_e2e"] = float(m[1]), float(m[2].replace(",", ""))
        m = re.match(r"Flink peer benchmark: .*verify: (.*)$", line)
        if m and m[1].strip() != "skipped":
            out["flink_verify_ok"] = 1.0 if m[1].strip() == "OK" else 0.0
    missing = [k for k in RESULT_KEYS if k not in out]
    if missing:
        raise PeerUnavailable(f"RESULT line lacks {missing}: {result}", out)
    if out["flink_window_rate"] <= 0:
        raise PeerUnavailable("flink_window_rate=0: " + _last_error(lines), out)
    if out.get("flink_verify_ok") == 0.0:
        raise PeerUnavailable("Flink read a different dataset: "
                              + next(x for x in lines if x.startswith("Flink peer benchmark:")), out)
    return out


def _last_error(lines: list[str]) -> str:
    errors = [x for x in lines if re.search(r"ERROR|FAILED|could not|Traceback", x)]
    return (errors[-1] if errors else lines[-1] if lines else "no output").strip()


def _stop(proc: subprocess.Popen, grace_s: float = 60) -> None:
    """SIGTERM the peer (it then deletes its topics and ends its JVM), later SIGKILL its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of it (the gateway JVM)
    except (ProcessLookupError, PermissionError):
        pass


def run_peer(bootstrap: str, events: int = 1_000_000, repeat: int = 3, parallelism: int = 2,
             timeout_s: float = 1800, venv: Path | None = None) -> dict[str, float]:
    """Run the peer on ``bootstrap`` (loopback; its payments topics are wiped), echo its output as
    ``[flink] ...`` and return its figures (see parse_output). Raises PeerUnavailable with a reason."""
    _check_loopback(bootstrap)
    python = ensure_venv(venv)  # not counted in timeout_s
    cmd = [str(python), str(peer_script()), "--bootstrap", bootstrap, "--events", str(events),
           "--repeat", str(repeat), "--parallelism", str(parallelism)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    print(f"[flink] $ {shlex.join(cmd)}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=env, start_new_session=True)
    timed_out = threading.Event()
    timer = threading.Timer(timeout_s, lambda: (timed_out.set(), _stop(proc)))
    timer.daemon = True
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            print(f"[flink] {lines[-1]}", flush=True)
        rc = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # interrupted: leave no peer or JVM behind
            _stop(proc)
    if timed_out.is_set():
        raise PeerUnavailable(f"timed out after {timeout_s:.0f} s: " + _last_error(lines))
    if rc != 0:
        raise PeerUnavailable(f"flink_peer.py exited {rc}: " + _last_error(lines))
    return parse_output(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of a loopback Kafka broker")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the run (venv build excluded)")
    parser.add_argument("--venv", type=Path, help="venv directory (default $KAPPALAKE_CACHE/flink-venv)")
    args = parser.parse_args()
    try:
        result = run_peer(args.bootstrap, args.events, args.repeat, args.parallelism, args.timeout, args.venv)
    except PeerUnavailable as e:
        print(f"flink peer unavailable: {e.reason}\npartial: {json.dumps(e.partial)}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
