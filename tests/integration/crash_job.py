"""The crash-recovery harness: a pipeline job meant to be SIGKILLed, and the helpers that drive it.

Run as a script it is the job (``run``) or a reader of its ClickHouse (``dump-gold``)::

    python tests/integration/crash_job.py run --spec spec.json [--available-now] [--max-offsets N]
    python tests/integration/crash_job.py dump-gold --spec spec.json --out DIR

``run`` builds a RunContext like the ``make_context`` fixture (the shipped pipeline re-pointed at the
spec's topic, gold tables suffixed with the topic, the spec's storage root) on a target whose ClickHouse
is the spec's own DSN (``chdb://<dir>`` by default: chDB allows one process per directory, so nothing
else opens it while the job runs) and runs ``bronze,silver,gold`` in one Spark application. It prints
``STARTED`` once all queries run and ``BATCH <query> <id> <rows>`` per finished micro-batch, and exits
with the KappalakeError's exit code (message on stderr, prefixed ``JOB ERROR:``) on a failure.

``dump-gold`` runs in a process of its own after the job is dead: it opens the job's ClickHouse and
writes each gold view's ``FINAL`` rows as Parquet.

Imported, it offers what the test and ``bench/reliability.py`` share: :class:`JobSpec`, :class:`Job`
(spawn in its own process group, wait for a marker, SIGKILL the whole group), :func:`crash_loop`,
:func:`observe_phase` (where each query stood when the job died, read from checkpoints and Delta logs)
and :func:`lake_accounting` (bronze/silver/dead-letter against the produced records).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PII_KEY = "crash-test-pii-key"
QUERIES = ("bronze", "silver", "gold")


@dataclass(frozen=True)
class JobSpec:
    """Everything a job process needs; written as JSON next to the job's data."""

    pipeline: str
    topic: str
    lake: str                      # storage root (Delta tables and checkpoints)
    dsn: str                       # ClickHouse DSN of the job (chdb:///abs/dir by default)
    stack_home: str                # KAPPALAKE_HOME of the running local broker (to find its address)
    job_home: str                  # KAPPALAKE_HOME of the job (runs dir, Spark warehouse)
    partitions: int = 3
    max_offsets: int = 300
    pii_key: str = PII_KEY

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def read(cls, path: Path) -> JobSpec:
        return cls(**json.loads(path.read_text()))

    @property
    def suffix(self) -> str:
        return self.topic.replace("-", "_")

    def with_dsn(self, dsn: str) -> JobSpec:
        return JobSpec(**{**asdict(self), "dsn": dsn})


# --------------------------------------------------------------------------- the job (child process)

def pipeline_for(spec: JobSpec, max_offsets: int | None = None):
    """The shipped pipeline on the spec's topic (as tests.integration.conftest.pipeline_on_topic does)."""
    from kappalake.config.loader import load_pipeline
    from kappalake.config.models import SourceConfig

    base = load_pipeline(spec.pipeline, REPO / "conf", "local")
    options = {**base.source.options, "maxOffsetsPerTrigger": str(max_offsets or spec.max_offsets)}
    source = SourceConfig(subscribe=[spec.topic], partitions=spec.partitions, options=options)
    views = {name: view.model_copy(update={"clickhouse": view.clickhouse.model_copy(
        update={"table": f"{view.clickhouse.table}_{spec.suffix}"})}) for name, view in base.gold.views.items()}
    return base.model_copy(update={"source": source, "gold": base.gold.model_copy(update={"views": views})})


def build_context(spec: JobSpec, max_offsets: int | None = None):
    from kappalake.config.loader import load_target
    from kappalake.runtime.context import RunContext
    from kappalake.runtime.paths import HomeLayout
    from kappalake.runtime.stack import LocalStack

    cache = Path(os.environ["KAPPALAKE_CACHE"])
    stack_layout = HomeLayout(home=Path(spec.stack_home), cache=cache)
    layout = HomeLayout(home=Path(spec.job_home), cache=cache)
    bootstrap = LocalStack(stack_layout).bootstrap_servers()  # the broker's address now (it may have moved)
    target = load_target(REPO / "conf", "local", env={**os.environ, "KAPPALAKE_HOME": spec.job_home})
    target = target.model_copy(update={
        "kafka": target.kafka.model_copy(update={"bootstrap_servers": bootstrap}),
        "storage": target.storage.model_copy(update={"root": spec.lake}),
        "clickhouse": target.clickhouse.model_copy(update={"dsn": spec.dsn}),
    })
    return RunContext(pipeline_for(spec, max_offsets), target, layout)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_job(spec: JobSpec, available_now: bool, max_offsets: int | None, timeout: float | None) -> int:
    from kappalake.errors import KappalakeError
    from kappalake.io.delta.stream import Trigger
    from kappalake.pipelines.runner import run_pipeline

    os.environ["KAPPALAKE_PII_KEY"] = spec.pii_key
    seen: dict[str, int] = {}
    started = False

    def on_progress(tracker) -> None:
        nonlocal started
        if not started:
            started = True
            _say(f"STARTED {time.time():.3f}")
        for name, history in tracker.history.items():
            for progress in history:
                batch = int(progress["batchId"])
                if batch > seen.get(name, -1):
                    seen[name] = batch
                    _say(f"BATCH {name} {batch} {int(progress.get('numInputRows') or 0)}")

    trigger = Trigger(available_now=True) if available_now else Trigger(interval="1 second")
    try:
        ctx = build_context(spec, max_offsets)
        from kappalake.runtime.spark import build_spark

        spark = build_spark(ctx.target, app_name=f"kappalake-{ctx.pipeline.name}", layout=ctx.layout)
        _say(f"SPARK {time.time():.3f}")
        result = run_pipeline(ctx, list(QUERIES), trigger, spark=spark, timeout=timeout, on_progress=on_progress)
    except KappalakeError as exc:
        sys.stderr.write(f"JOB ERROR: {exc}\n")
        sys.stderr.flush()
        return exc.exit_code
    on_progress(type("T", (), {"history": result.progress})())
    _say("DONE " + json.dumps({name: t.input_rows for name, t in result.totals.items()}))
    return 0


def dump_gold(spec: JobSpec, out: Path) -> None:
    """Write each gold view's FINAL rows as Parquet (run in a process of its own, after the job died)."""
    import pyarrow.parquet as pq

    from kappalake.io.clickhouse.client import connect

    ch = connect(spec.dsn)
    out.mkdir(parents=True, exist_ok=True)
    for name, view in pipeline_for(spec).gold.views.items():
        table = view.clickhouse.table
        pq.write_table(ch.query_arrow(f"SELECT * FROM `{table}` FINAL"), out / f"{name}.parquet")
        raw = ch.rows(f"SELECT count() FROM `{table}`")[0][0]
        (out / f"{name}.raw_count").write_text(str(raw))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("run", "dump-gold"))
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--available-now", action="store_true")
    parser.add_argument("--max-offsets", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    spec = JobSpec.read(args.spec)
    if args.mode == "dump-gold":
        dump_gold(spec, args.out)
        return 0
    return run_job(spec, args.available_now, args.max_offsets, args.timeout)


# --------------------------------------------------------------------------- the driver (parent process)

def job_env(spec: JobSpec) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CLICKHOUSE_DSN", "PYTEST_CURRENT_TEST")}
    env.update(KAPPALAKE_HOME=spec.job_home, KAPPALAKE_PII_KEY=spec.pii_key, PYTHONUNBUFFERED="1",
               KAPPALAKE_CACHE=os.environ.get("KAPPALAKE_CACHE") or str(REPO / ".kappalake" / "cache"),
               KAPPALAKE_CONF=str(REPO / "conf"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


class Job:
    """One job process in its own process group; its stdout lines are collected with their arrival time."""

    def __init__(self, spec_path: Path, spec: JobSpec, log: Path, *args: str, prefix: list[str] | None = None) -> None:
        self.spec = spec
        self.log = log
        self.lines: list[tuple[float, str]] = []
        self.spawned = time.monotonic()
        self._stderr = open(log, "ab")  # noqa: SIM115 - closed in wait()
        command = [*(prefix or []), sys.executable, str(Path(__file__).resolve()), "run", "--spec", str(spec_path),
                   *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL,
                                        cwd=REPO, env=job_env(spec), start_new_session=True, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    @property
    def started_at(self) -> float | None:
        return next((t for t, line in self.lines if line.startswith("STARTED")), None)

    def batches(self) -> int:
        return sum(1 for _, line in self.lines if line.startswith("BATCH ") and not line.endswith(" 0"))

    def wait_started(self, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.started_at is not None:
                return self.started_at
            time.sleep(0.1)
        return self.started_at

    def sleep_alive(self, seconds: float) -> bool:
        """Sleep while the job runs; False if it ended first."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            time.sleep(0.05)
        return True

    def kill(self) -> None:
        """SIGKILL the whole process group (Python driver, JVM, Python workers) at once."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait(30)

    def wait(self, timeout: float | None = None) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            code = self.process.wait(30)
        self._reader.join(5)
        # Children outside the group cannot exist (start_new_session); stragglers of the group die here.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._stderr.close()
        return code

    def stderr_tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(line for line in text if "WARN" not in line[:40])[-4000:] if text else ""

    def error_line(self) -> str:
        return "\n".join(line for line in self.log.read_text(errors="replace").splitlines()
                         if line.startswith("JOB ERROR:"))


def spawn(spec_path: Path, spec: JobSpec, log: Path, *args: str, prefix: list[str] | None = None) -> Job:
    return Job(spec_path, spec, log, *args, prefix=prefix)


def run_to_end(spec_path: Path, spec: JobSpec, log: Path, *args: str, timeout: float = 600,
               prefix: list[str] | None = None) -> tuple[int, Job]:
    job = spawn(spec_path, spec, log, *args, prefix=prefix)
    return job.wait(timeout), job


# --------------------------------------------------------------------------- where a kill landed

def _max_id(folder: Path) -> int:
    try:
        ids = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
    except FileNotFoundError:
        return -1
    return max(ids, default=-1)


def _delta_txn(table: Path) -> dict[str, int]:
    """Highest txn version per app id in a Delta log (JSON commits only; the tables here stay small)."""
    out: dict[str, int] = {}
    log = table / "_delta_log"
    try:
        files = sorted(p for p in log.iterdir() if p.suffix == ".json" and p.stem.isdigit())
    except FileNotFoundError:
        return out
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if '"txn"' in line:
                txn = json.loads(line)["txn"]
                out[txn["appId"]] = max(out.get(txn["appId"], -1), int(txn["version"]))
    return out


def query_names(spec: JobSpec) -> list[str]:
    return [*QUERIES, *[f"gold.{name}" for name in pipeline_for(spec).gold.views]]


def checkpoint_state(spec: JobSpec) -> dict[str, tuple[int, int]]:
    """(last planned batch, last committed batch) per query, from its checkpoint."""
    root = Path(spec.lake) / "_checkpoints" / spec.pipeline
    return {q: (_max_id(root / q / "live" / "offsets"), _max_id(root / q / "live" / "commits"))
            for q in query_names(spec)}


def observe_phase(spec: JobSpec, before: dict[str, tuple[int, int]], job_started: bool) -> list[str]:
    """Where the job stood when it died: per query, idle or inside a batch, and whether that batch's Delta
    transaction was already committed while its checkpoint commit was not (the window exactly-once covers)."""
    state = checkpoint_state(spec)
    lake = Path(spec.lake) / spec.pipeline
    txns = {"bronze": _delta_txn(lake / "bronze"), "silver": _delta_txn(lake / "silver"),
            "dead_letter": _delta_txn(lake / "dead_letter"), "gold": _delta_txn(lake / "gold_events")}
    labels = []
    for query, (planned, committed) in state.items():
        if planned > committed:
            table_txn = None
            if query == "bronze":
                table_txn = max(txns["bronze"].values(), default=-1)
            elif query == "silver":
                table_txn = max((v for k, v in txns["silver"].items() if ":silver:" in k), default=-1)
            elif query == "gold":
                table_txn = max(txns["gold"].values(), default=-1)
            if table_txn is not None and table_txn >= planned:
                labels.append(f"{query}: Delta committed, checkpoint commit pending")
            elif query.startswith("gold."):
                labels.append(f"{query}: inside a batch (aggregate / ClickHouse insert)")
            else:
                labels.append(f"{query}: inside a batch (before its Delta commit)")
    if not labels:
        progressed = any(state[q][1] > before.get(q, (-1, -1))[1] for q in state)
        labels.append("between batches" if progressed or job_started else "startup (before the first batch)")
    return labels


@dataclass
class KillRecord:
    number: int
    mode: str
    delay: float
    seconds_alive: float
    batches_seen: int
    phase: list[str] = field(default_factory=list)


def crash_loop(spec_path: Path, spec: JobSpec, kills: int, seed: int, logs: Path,
               startup_fraction: float = 0.2, running_delay: tuple[float, float] = (0.3, 7.0),
               startup_delay: tuple[float, float] = (2.0, 14.0), say=print) -> list[KillRecord]:
    """Start the live job and SIGKILL it ``kills`` times at seeded random moments: some during start-up
    (checkpoint and table creation), most a random time after all queries run (inside Delta writes,
    between a Delta commit and the checkpoint commit, inside ClickHouse inserts, between batches)."""
    rng = random.Random(seed)
    records: list[KillRecord] = []
    logs.mkdir(parents=True, exist_ok=True)
    for number in range(1, kills + 1):
        before = checkpoint_state(spec)
        job = spawn(spec_path, spec, logs / f"kill-{number:02d}.log")
        if rng.random() < startup_fraction:
            mode, delay = "startup", rng.uniform(*startup_delay)
            alive = job.sleep_alive(delay)
        else:
            mode, delay = "running", rng.uniform(*running_delay)
            started = job.wait_started(timeout=180)
            alive = started is not None and job.sleep_alive(delay)
        if not alive:
            code = job.wait(30)
            raise AssertionError(f"kill {number}: the job ended by itself (exit {code}) before the kill:\n"
                                 f"{job.stderr_tail()}")
        seconds = time.monotonic() - job.spawned
        job.kill()
        record = KillRecord(number, mode, round(delay, 2), round(seconds, 1), job.batches(),
                            observe_phase(spec, before, job.started_at is not None))
        records.append(record)
        say(f"kill {number:2d} [{mode:7s} +{delay:4.1f}s, alive {seconds:5.1f}s, {record.batches_seen:2d} "
            f"batches]: {'; '.join(record.phase)}")
    return records


def phase_summary(records: list[KillRecord]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for record in records:
        for label in record.phase:
            counts[label.split(" (")[0] if label.startswith(("startup", "between")) else label] += 1
    return counts


# --------------------------------------------------------------------------- what the lake holds

def lake_accounting(spec: JobSpec, records: list[tuple[int, int, bytes | None, bytes]],
                    valid_ids: set[str]) -> dict[str, Any]:
    """Bronze, silver and dead-letter against the produced records (partition, offset, key, value) and the
    event ids that should reach silver; every other record should be dead-lettered."""
    from deltalake import DeltaTable

    lake = Path(spec.lake) / spec.pipeline
    produced = {(p, o) for p, o, _, _ in records}
    bronze = DeltaTable(str(lake / "bronze")).to_pandas(columns=["topic", "partition", "offset"])
    bronze_keys = list(zip(bronze["partition"].astype(int), bronze["offset"].astype(int)))
    silver = DeltaTable(str(lake / "silver")).to_pandas(columns=["event_id"])
    dead = DeltaTable(str(lake / "dead_letter")).to_pandas(columns=["source_partition", "source_offset",
                                                                    "error_class"])
    dead_keys = list(zip(dead["source_partition"].astype(int), dead["source_offset"].astype(int)))
    valid_coords = {(p, o) for p, o, _, v in records if _event_id(v) in valid_ids}
    expected_dead = produced - valid_coords - _duplicate_coords(records, valid_ids)
    silver_ids = list(silver["event_id"])
    return {
        "produced": len(produced),
        "bronze_rows": len(bronze_keys),
        "bronze_lost": len(produced - set(bronze_keys)),
        "bronze_duplicated": len(bronze_keys) - len(set(bronze_keys)),
        "bronze_foreign": len(set(bronze_keys) - produced),
        "silver_rows": len(silver_ids),
        "silver_lost": len(valid_ids - set(silver_ids)),
        "silver_duplicated": len(silver_ids) - len(set(silver_ids)),
        "silver_foreign": len(set(silver_ids) - valid_ids),
        "dead_rows": len(dead_keys),
        "dead_lost": len(expected_dead - set(dead_keys)),
        "dead_duplicated": len(dead_keys) - len(set(dead_keys)),
        "dead_foreign": len(set(dead_keys) - expected_dead),
        "dead_classes": dict(Counter(dead["error_class"])),
    }


def _event_id(value: bytes) -> str | None:
    try:
        payload = json.loads(value)
    except ValueError:
        return None
    return payload.get("event_id") if isinstance(payload, dict) and isinstance(payload.get("event_id"), str) else None


def _duplicate_coords(records: list[tuple[int, int, bytes | None, bytes]], valid_ids: set[str]) -> set[tuple[int, int]]:
    """Records repeating a valid event id (silver keeps the first, drops these; they are not dead letters)."""
    seen: set[str] = set()
    out = set()
    for p, o, _, v in sorted(records, key=lambda r: (r[0], r[1])):
        event_id = _event_id(v)
        if event_id in valid_ids:
            if event_id in seen:
                out.add((p, o))
            seen.add(event_id)
    return out


def _first_coords(records: list[tuple[int, int, bytes | None, bytes]], valid_ids: set[str]) -> set[tuple[int, int]]:
    return {(p, o) for p, o, _, v in records if _event_id(v) in valid_ids} - _duplicate_coords(records, valid_ids)


def lost_and_duplicated(accounting: dict[str, Any]) -> tuple[int, int]:
    lost = accounting["bronze_lost"] + accounting["silver_lost"] + accounting["dead_lost"]
    duplicated = accounting["bronze_duplicated"] + accounting["silver_duplicated"] + accounting["dead_duplicated"]
    return lost, duplicated


def dump_gold_tables(spec_path: Path, spec: JobSpec, out: Path, timeout: float = 180) -> dict[str, Any]:
    """{view: (FINAL rows as pandas, raw row count)} read by a separate process from the job's ClickHouse."""
    import pandas as pd

    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "dump-gold", "--spec", str(spec_path),
                             "--out", str(out)], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                            env=job_env(spec))
    if result.returncode != 0:
        raise AssertionError(f"reading the job's ClickHouse failed:\n{result.stderr[-3000:]}")
    return {name: (pd.read_parquet(out / f"{name}.parquet"), int((out / f"{name}.raw_count").read_text()))
            for name in pipeline_for(spec).gold.views}


if __name__ == "__main__":
    sys.exit(main())
