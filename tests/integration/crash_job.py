"""The crash-recovery harness: a pipeline job meant to be SIGKILLed, and the helpers that drive it.

Run as a script it is the job (``run``) or a reader of its ClickHouse (``dump-gold``)::

    python tests/integration/crash_job.py run --spec spec.json [--available-now] [--max-offsets N]
        [--kill-at POINT [--kill-skip N] [--kill-delay S] [--kill-query Q]] [--outage-flag FILE]
    python tests/integration/crash_job.py dump-gold --spec spec.json --out DIR

``run`` builds a RunContext like the ``make_context`` fixture (the shipped pipeline re-pointed at the
spec's topic, gold tables suffixed with the topic, the spec's storage root) on a target whose ClickHouse
is the spec's own DSN (the test's own local ClickHouse HTTP endpoint, which outlives the killed job as a
server would; a ``chdb://<dir>`` DSN also works, opened by the job alone) and runs ``bronze,silver,gold`` in one Spark application. It prints
``SPARK`` once the session is up, ``STARTED`` once all queries run and ``BATCH <query> <id> <rows>`` per
finished micro-batch, and exits with the KappalakeError's exit code (message on stderr, prefixed
``JOB ERROR:``) on a failure.

Test-build hooks (this file only; production code is untouched): ``--kill-at`` makes the job SIGKILL its own
process group at one of :data:`KILL_POINTS` (e.g. right after silver's Delta commit, before Spark writes the checkpoint commit;
or right after a view's public ClickHouse table was written, before its state table), printing
``KILLED <point> cpu=<s> <what it saw>`` first; ``--outage-flag`` makes every ClickHouse insert and state
read fail like a refused connection while the file exists.

``dump-gold`` runs in a process of its own after the job is dead: it opens the job's ClickHouse and
writes each gold view's ``FINAL`` rows as Parquet.

Imported, it offers what the test and ``bench/reliability.py`` share: :class:`JobSpec`, :class:`Job`
(spawn in its own process group, wait for a marker, SIGKILL the whole group), :class:`Feed` (produce
rounds), :func:`crash_loop` (kill at each point of a seeded schedule, restart), :func:`observe_phase`
(where each query stood when the job died, read from checkpoints and Delta logs), :func:`window_hit`,
:func:`lake_accounting` (bronze/silver/dead-letter against the produced records), :func:`expected_events`
and :func:`gold_differences` (the views against ``gold_reference``), :func:`dump_gold_tables`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PII_KEY = "crash-test-pii-key"
#: JVM options of the driver of every job this harness starts (``KAPPALAKE_CRASH_JVM_OPTS`` overrides; empty:
#: none). Each lives for seconds, and C2 compilation of code that runs a few times was most of its CPU: C1
#: only cut a kill cycle's CPU by ~40% (measured: 48 -> 29 CPU-s to the first bronze batch). C1 alone gets a
#: 48 MB code cache by default, which a long run fills ("Out of space in CodeCache"): keep the tiered size.
#: The serial collector saves G1's concurrent threads on 2 cores (measured: ~2 s and ~4 CPU-s per start).
#: Drains and the other scenarios' jobs live for seconds too and use the same options; the rest of the test
#: suite (the in-process session, the CLI and notebook tests) runs Spark with the JVM's defaults.
CRASH_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m -XX:+UseSerialGC"
QUERIES = ("bronze", "silver", "gold")


def crash_jvm_options() -> str:
    """The job JVM's extra options: ``KAPPALAKE_CRASH_JVM_OPTS`` if set (empty: none), else CRASH_JVM_OPTIONS."""
    return os.environ.get("KAPPALAKE_CRASH_JVM_OPTS", CRASH_JVM_OPTIONS)


@dataclass(frozen=True)
class JobSpec:
    """Everything a job process needs; written as JSON next to the job's data."""

    pipeline: str
    topic: str
    lake: str                      # storage root (Delta tables and checkpoints)
    dsn: str                       # ClickHouse DSN of the job (http://127.0.0.1:P of a local endpoint, or chdb:///dir)
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
    jvm = os.environ.get("KAPPALAKE_JOB_JVM_OPTS", "").strip()
    if jvm:  # extra driver JVM options (crash loop: CRASH_JVM_OPTIONS), after the shipped log4j setting
        from kappalake.runtime.spark import session_conf

        shipped = session_conf(target, layout).get("spark.driver.extraJavaOptions", "")
        conf = {**target.spark.conf, "spark.driver.extraJavaOptions": f"{shipped} {jvm}".strip()}
        target = target.model_copy(update={"spark": target.spark.model_copy(update={"conf": conf})})
    return RunContext(pipeline_for(spec, max_offsets), target, layout)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- kill hooks (child process)
#
# Test-build hooks: installed by this harness into the job process only (by wrapping the pipeline's
# foreachBatch functions and watching the storage root), never part of the production code path. Each
# SIGKILLs the job's whole process group (driver, JVM, Python workers) at one chosen moment of one query.
#
# Gold is one query per pipeline (``<pipeline>.gold``): per batch, the late pairs to Delta (none here),
# then per view (WindowStore.write): read the view's state table FINAL, merge, write the public table,
# write the state table. The ``view.*`` points aim at one view's part of a gold batch (``--kill-query``
# names the view); the queries that report batches are bronze, silver and gold.

#: Kill points: where in which query a kill lands. ``startup`` and ``*.during`` of a JVM-side write are
#: reached by time or by watching files; the rest by wrapping the Python ``foreachBatch`` code.
KILL_POINTS = (
    "startup",           # JVM up; tables, checkpoints, ClickHouse DDL, query start (killed by the parent)
    "bronze.during",     # bronze batch: a data file written, its Delta commit not yet
    "bronze.committed",  # bronze batch: Delta version committed, checkpoint commit not yet
    "silver.during",     # silver batch: a data file of the silver append written, not committed
    "silver.between",    # silver batch: silver committed, dead-letter append not yet
    "silver.committed",  # silver batch: silver and dead letters committed, checkpoint commit not yet
    "gold.during",       # gold batch: inside foreachBatch, before any ClickHouse write (+delay, or at the
                         # first view's merge, whichever comes first)
    "gold.committed",    # gold batch: foreachBatch returned (every view's writes done), checkpoint commit not yet
    "view.during",       # gold batch, one view: its state read and merged, before its public insert
    "view.insert",       # gold batch, one view: during a ClickHouse insert (its public or its state table)
    "view.inserted",     # gold batch, one view: public table written, its state table write not yet
    "idle",              # right after a query finished a non-empty batch (between micro-batches)
)

_IN_CREATE, _IN_CLOSE_WRITE, _IN_MOVED_TO = 0x100, 0x8, 0x80


def group_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by every live process of this process group."""
    group, total = os.getpgrp(), 0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # fields after the command: state ppid pgrp ... utime(12) stime(13)
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _data_files(table: Path) -> set[str]:
    out = set()
    for folder, dirs, files in os.walk(table):
        dirs[:] = [d for d in dirs if d != "_delta_log"]
        out.update(os.path.join(folder, f) for f in files if f.endswith(".parquet"))
    return out


def _offsets(path: Path) -> dict[str, int] | None:
    """Sum of the Kafka offsets per topic in one checkpoint offsets file (None for a Delta source)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in lines[2:]:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            for topic, parts in value.items():
                if isinstance(parts, dict) and all(isinstance(v, int) for v in parts.values()):
                    out[topic] = sum(parts.values())
    return out or None


class KillHook:
    """SIGKILL this job's process group at the moment ``point`` names, after ``skip`` earlier chances."""

    def __init__(self, spec: JobSpec, point: str, delay: float, skip: int, query: str | None) -> None:
        self.spec, self.point, self.delay, self.skip, self.query = spec, point, delay, skip, query
        self.lake = Path(spec.lake) / spec.pipeline
        self.checkpoints = Path(spec.lake) / "_checkpoints" / spec.pipeline
        self.started = threading.Event()
        self._lock = threading.Lock()
        self._fired = False
        views = pipeline_for(spec).gold.views
        self.view_table = views[query].clickhouse.table if query in views else None

    def _thread(self, target) -> None:
        """Run a watcher; a failing watcher says so (the parent then sees a hook that never fired)."""
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - reported, the job goes on
                _say(f"HOOK ERROR {self.point}: {type(exc).__name__}: {exc}")

        threading.Thread(target=run, daemon=True).start()

    # ------------------------------------------------------------------ the kill
    def kill(self, detail: str) -> None:
        with self._lock:
            if self._fired:
                return
            self._fired = True
            _say(f"KILLED {self.point} cpu={group_cpu_seconds():.1f} {detail}")
            os.killpg(os.getpgrp(), signal.SIGKILL)

    def chance(self) -> bool:
        """One opportunity to kill: True once the first ``skip`` have passed."""
        with self._lock:
            self.skip -= 1
            return self.skip < 0

    def kafka_rows(self, query: str, batch_id: int) -> int:
        """Records in batch ``batch_id`` of a Kafka-sourced query (from its offsets log)."""
        offsets = self.checkpoints / query / "live" / "offsets"
        now, before = _offsets(offsets / str(batch_id)), _offsets(offsets / str(batch_id - 1))
        if now is None:
            return 0
        return sum(now.values()) - sum((before or {}).values())

    def committed(self, query: str, batch_id: int) -> str:
        done = (self.checkpoints / query / "live" / "commits" / str(batch_id)).exists()
        return "checkpoint commit present" if done else "checkpoint commit pending"

    # ------------------------------------------------------------------ installation
    def install(self) -> None:
        point = self.point
        if point == "bronze.committed":
            self._thread(self._watch_bronze_log)
        elif point == "bronze.during":
            self._thread(self._watch_bronze_files)
        elif point in ("silver.during", "silver.between", "silver.committed"):
            self._wrap_silver()
        elif point in ("gold.during", "gold.committed"):
            self._wrap_gold_batch()
        elif point in ("view.during", "view.insert", "view.inserted"):
            self._wrap_gold_sink()
        elif point not in ("idle", "startup"):
            raise SystemExit(f"unknown kill point {point!r}")

    def on_progress(self, name: str, batch: int, rows: int) -> None:
        """A query reported a finished batch (the 'idle' point: kill between its batches)."""
        if self.point == "idle" and rows > 0 and name.endswith(f".{self.query}") and self.chance():
            self.kill(f"{name} batch {batch} ({rows} rows) finished, next batch not begun or just begun")

    def _watch_bronze_log(self) -> None:
        """inotify on bronze's _delta_log: kill the moment a streaming commit (with a txn) lands."""
        import ctypes
        import ctypes.util
        import re

        log = self.lake / "bronze" / "_delta_log"
        self.started.wait()
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fd = libc.inotify_init1(0)
        if fd < 0 or libc.inotify_add_watch(fd, str(log).encode(), _IN_MOVED_TO | _IN_CLOSE_WRITE) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {log}")
        name_re = re.compile(r"^\d{20}\.json$")
        while True:
            data = os.read(fd, 65536)
            at = 0
            while at < len(data):
                _, mask, _, length = struct.unpack_from("iIII", data, at)
                name = data[at + 16:at + 16 + length].rstrip(b"\0").decode()
                at += 16 + length
                if not name_re.match(name):
                    continue
                text = (log / name).read_text()
                if '"txn"' not in text:
                    continue
                batch = json.loads(next(line for line in text.splitlines() if '"txn"' in line))["txn"]["version"]
                # The JVM writes the checkpoint commit right after: kill only if it has not yet (else the
                # next batch is the chance), so that a bronze.committed kill is always inside the window.
                pending = not (self.checkpoints / "bronze" / "live" / "commits" / str(batch)).exists()
                if pending and self.kafka_rows("bronze", batch) > 0 and self.chance():
                    self.kill(f"bronze batch {batch}: Delta version {int(name[:20])} committed, "
                              f"{self.committed('bronze', batch)}")

    def _new_batches(self, query: str):
        """Yield the ids of batches of ``query`` as they begin in this process (the pending replay first)."""
        folder = self.checkpoints / query / "live"
        self.started.wait()
        seen = _max_id(folder / "commits")
        while True:
            planned = _max_id(folder / "offsets")
            if planned > seen:
                seen = planned
                yield planned
            time.sleep(0.005)

    def _watch_bronze_files(self) -> None:
        table = self.lake / "bronze"
        for batch in self._new_batches("bronze"):
            if self.kafka_rows("bronze", batch) <= 0 or not self.chance():
                continue
            before = _data_files(table)
            while not (self.checkpoints / "bronze" / "live" / "commits" / str(batch)).exists():
                new = _data_files(table) - before
                if new:
                    self.kill(f"bronze batch {batch}: data file {Path(sorted(new)[0]).name} written, "
                              "Delta commit pending")
                time.sleep(0.005)

    def _watch_write(self, table: Path, label: str) -> threading.Event:
        """Kill when a new data file appears under ``table`` (until the returned event is set)."""
        done = threading.Event()
        before = _data_files(table)

        def watch() -> None:
            while not done.is_set():
                new = _data_files(table) - before
                if new:
                    self.kill(f"{label}: data file {Path(sorted(new)[0]).name} written, Delta commit pending")
                time.sleep(0.005)

        self._thread(watch)
        return done

    def _append_watched(self, append, watch: bool, df, path: str, app_id: str, version: int, *args, **kwargs) -> None:
        """Run the wrapped ``append_idempotent``; with ``watch``, kill when its first data file appears."""
        watching = self._watch_write(Path(path), f"{Path(path).name} batch {version}") if watch else None
        try:
            append(df, path, app_id, version, *args, **kwargs)
        finally:
            if watching is not None:
                watching.set()

    def _wrap_silver(self) -> None:
        from kappalake.pipelines import silver

        writer_call = silver.SilverBatchWriter.__call__
        append = silver.append_idempotent
        current: dict[str, Any] = {}
        hook = self

        def call(writer, batch, batch_id: int) -> None:
            current.update(batch=batch_id, rows=hook.kafka_rows("silver", batch_id))
            if hook.point == "silver.between":  # a replay whose dead letters are in already skips both writes
                done = _delta_txn(hook.lake / "dead_letter").get(writer.app_id, -1) >= batch_id
                current["rows"] = 0 if done else current["rows"]
            current["armed"] = current["rows"] > 0 and hook.chance()
            writer_call(writer, batch, batch_id)
            if current["armed"] and hook.point == "silver.committed":
                hook.kill(f"silver batch {batch_id} ({current['rows']} records): silver and dead letters "
                          f"committed, {hook.committed('silver', batch_id)}")

        def append_idempotent(df, path: str, app_id: str, version: int, *args, **kwargs) -> None:
            is_silver = Path(path) == hook.lake / "silver"
            watch = bool(current.get("armed")) and is_silver and hook.point == "silver.during"
            hook._append_watched(append, watch, df, path, app_id, version, *args, **kwargs)
            if current.get("armed") and is_silver and hook.point == "silver.between":
                hook.kill(f"silver batch {version}: silver committed, dead-letter append pending")

        silver.SilverBatchWriter.__call__ = call
        silver.append_idempotent = append_idempotent

    def _wrap_gold_batch(self) -> None:
        """Wrap the gold query's ``foreachBatch`` (and its per-view merges): ``gold.during`` fires at the first
        view's write of an armed batch, before any ClickHouse write; ``gold.committed`` once it returned."""
        from kappalake.pipelines import gold, gold_view

        writer_call = gold.GoldBatchWriter.__call__
        view_write = gold_view.ViewWriter.write
        current: dict[str, Any] = {}
        hook = self

        def call(writer, batch, batch_id: int) -> None:
            current.update(batch=batch_id, rows=hook.kafka_rows("gold", batch_id))
            current["armed"] = current["rows"] > 0 and hook.chance()
            writer_call(writer, batch, batch_id)
            if current["armed"] and hook.point == "gold.committed":
                hook.kill(f"gold batch {batch_id} ({current['rows']} records): every view written, "
                          f"{hook.committed('gold', batch_id)}")

        def write(view_writer, partials, batch_id: int, generation: int) -> int:
            if current.get("armed") and hook.point == "gold.during":
                hook.kill(f"gold batch {batch_id} ({current['rows']} records): inside the batch, before any "
                          f"ClickHouse write, {hook.committed('gold', batch_id)}")
            return view_write(view_writer, partials, batch_id, generation)

        gold.GoldBatchWriter.__call__ = call
        gold_view.ViewWriter.write = write

    def _wrap_gold_sink(self) -> None:
        """Wrap the ClickHouse writes of one view (``--kill-query``; any view without): its public table is
        written first, then its state table (``<table>_state``)."""
        from kappalake.io.clickhouse import sink

        write, insert = sink.GoldSink.write, sink.GoldSink._insert
        hook = self
        state: dict[str, Any] = {}

        def ours(table: str) -> bool:
            public = table.removesuffix("_state")
            return hook.view_table in (None, public)

        def write_batch(gold_sink, data, batch_id: int) -> int:
            table = gold_sink.table.name
            public = not table.endswith("_state")
            armed = data.num_rows > 0 and ours(table)
            if hook.point in ("view.during", "view.inserted"):
                armed = armed and public and hook.chance()
            state.update(armed=armed, batch=batch_id, table=table, returned=False)
            if armed and hook.point == "view.during":
                hook.kill(f"{table} batch {batch_id}: state read and merged ({data.num_rows} windows), public "
                          f"insert not begun, {hook.committed('gold', batch_id)}")
            rows = write(gold_sink, data, batch_id)
            if armed and hook.point == "view.inserted":
                hook.kill(f"{table} batch {batch_id}: {rows} rows written to the public table, state table "
                          f"write pending, {hook.committed('gold', batch_id)}")
            return rows

        def insert_chunk(gold_sink, data, token: str) -> None:
            if state.get("armed") and hook.point == "view.insert":
                def fire() -> None:  # an insert that returned within the delay does not count: the next one
                    if not state["returned"] and hook.chance():
                        hook.kill(f"{state['table']} batch {state['batch']}: {hook.delay * 1000:.1f} ms into the "
                                  f"ClickHouse insert ({data.num_rows} rows), inside the insert")

                state["returned"] = False
                threading.Timer(hook.delay, fire).start()
            insert(gold_sink, data, token)
            state["returned"] = True

        sink.GoldSink.write = write_batch
        sink.GoldSink._insert = insert_chunk


def install_outage(flag: Path) -> None:
    """Test hook: while ``flag`` exists, every ClickHouse insert and read of the gold writers fails as a
    refused connection does. The gold writers keep the shipped number of attempts but back off 10x shorter
    (the test waits less)."""
    from clickhouse_connect.driver.exceptions import OperationalError

    from kappalake.io.clickhouse import client, sink, windows

    shipped = sink.RetryPolicy()
    fast = sink.RetryPolicy(attempts=shipped.attempts, first_delay=shipped.first_delay / 10,
                            max_delay=shipped.max_delay / 10)
    store_init = windows.WindowStore.__init__

    def window_store(self, *args, **kwargs) -> None:
        kwargs["retry"] = fast
        store_init(self, *args, **kwargs)

    windows.WindowStore.__init__ = window_store
    refused = [0]

    def refusing(call, what: str):
        def wrapped(ch, table_or_sql: str, *args, **kwargs) -> Any:
            if flag.exists():
                refused[0] += 1
                _say(f"REFUSED {refused[0]} {what}")
                raise OperationalError("Error HTTPConnectionPool(host='127.0.0.1', port=8123): Max retries "
                                       "exceeded (Caused by NewConnectionError: [Errno 111] Connection refused) "
                                       "(injected)")
            return call(ch, table_or_sql, *args, **kwargs)
        return wrapped

    client.ClickHouse.insert_arrow = refusing(client.ClickHouse.insert_arrow, "insert")
    client.ClickHouse.query_arrow = refusing(client.ClickHouse.query_arrow, "read")


def run_job(spec: JobSpec, available_now: bool, max_offsets: int | None, timeout: float | None,
            hook: KillHook | None = None, outage: Path | None = None) -> int:
    from kappalake.errors import KappalakeError
    from kappalake.io.delta.stream import Trigger
    from kappalake.pipelines.runner import run_pipeline
    from kappalake.runtime.spark import build_spark

    os.environ["KAPPALAKE_PII_KEY"] = spec.pii_key
    reported: dict[str, int] = {}
    started: list[float] = []

    def report(history: dict[str, list[dict[str, Any]]]) -> None:
        for name, progresses in history.items():
            for progress in progresses:
                batch = int(progress["batchId"])
                if batch > reported.get(name, -1):
                    reported[name] = batch
                    rows = int(progress.get("numInputRows") or 0)
                    _say(f"BATCH {name} {batch} {rows}")
                    if hook is not None:
                        hook.on_progress(name, batch, rows)

    def on_progress(tracker) -> None:
        if not started:
            started.append(time.time())
            _say(f"STARTED {started[0]:.3f}")  # every query of the run has started
            if hook is not None:
                hook.started.set()
        report(tracker.history)

    trigger = Trigger(available_now=True) if available_now else Trigger(interval="1 second")
    try:
        if hook is not None:
            hook.install()
        if outage is not None:
            install_outage(outage)
        ctx = build_context(spec, max_offsets)
        spark = build_spark(ctx.target, app_name=f"kappalake-{ctx.pipeline.name}", layout=ctx.layout)
        _say(f"SPARK {time.time():.3f}")
        result = run_pipeline(ctx, list(QUERIES), trigger, spark=spark, timeout=timeout, on_progress=on_progress)
    except KappalakeError as exc:
        sys.stderr.write(f"JOB ERROR: {exc}\n")
        sys.stderr.flush()
        return exc.exit_code
    report(result.progress)
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
    parser.add_argument("--kill-at", choices=KILL_POINTS, default=None)
    parser.add_argument("--kill-delay", type=float, default=0.0)
    parser.add_argument("--kill-skip", type=int, default=0)
    parser.add_argument("--kill-query", default=None)
    parser.add_argument("--outage-flag", type=Path, default=None)
    args = parser.parse_args(argv)
    spec = JobSpec.read(args.spec)
    if args.mode == "dump-gold":
        dump_gold(spec, args.out)
        return 0
    hook = KillHook(spec, args.kill_at, args.kill_delay, args.kill_skip, args.kill_query) if args.kill_at else None
    return run_job(spec, args.available_now, args.max_offsets, args.timeout, hook, args.outage_flag)


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

    def __init__(self, spec_path: Path, spec: JobSpec, log: Path, *args: str, prefix: list[str] | None = None,
                 jvm_options: str | None = None) -> None:
        self.spec = spec
        self.log = log
        self.lines: list[tuple[float, str]] = []
        self.spawned = time.monotonic()
        self.ended_at: float | None = None
        self._stderr = open(log, "ab")  # noqa: SIM115 - closed in wait()
        jvm = crash_jvm_options() if jvm_options is None else jvm_options
        command = [*(prefix or []), sys.executable, str(Path(__file__).resolve()), "run", "--spec", str(spec_path),
                   *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL,
                                        cwd=REPO, env={**job_env(spec), "KAPPALAKE_JOB_JVM_OPTS": jvm},
                                        start_new_session=True, text=True)
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
        return self.started_at if self.wait_marker("STARTED", timeout) else None

    def wait_marker(self, prefix: str, timeout: float) -> bool:
        """Wait until the job printed a line starting with ``prefix``; False if it ended or time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line.startswith(prefix) for _, line in self.lines):
                return True
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self._reader.join(1)
        return any(line.startswith(prefix) for _, line in self.lines)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code once the process ended by itself (-9: SIGKILLed), None after ``timeout``."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.ended_at = time.monotonic()
        self.wait(30)
        return code

    def killed_line(self) -> str | None:
        """The line a kill hook printed just before it SIGKILLed the job."""
        return next((line for _, line in self.lines if line.startswith("KILLED ")), None)

    def hook_errors(self) -> str:
        return "\n".join(line for _, line in self.lines if line.startswith("HOOK ERROR"))

    def group_cpu_seconds(self) -> float:
        """CPU seconds used so far by the live processes of the job's process group."""
        total, tick = 0, os.sysconf("SC_CLK_TCK")
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[2]) == self.process.pid:
                    total += int(fields[11]) + int(fields[12])
        return total / tick

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
        if self.ended_at is None:
            self.ended_at = time.monotonic()
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

    def stderr_tail(self, lines: int = 40) -> str:
        """The last lines of the job's stderr, without Spark's WARN chatter."""
        text = [line for line in self.log.read_text(errors="replace").splitlines() if " WARN " not in line[:60]]
        return "\n".join(text[-lines:])[-6000:]

    def error_line(self) -> str:
        return "\n".join(line for line in self.log.read_text(errors="replace").splitlines()
                         if line.startswith("JOB ERROR:"))


def spawn(spec_path: Path, spec: JobSpec, log: Path, *args: str, prefix: list[str] | None = None,
          jvm_options: str | None = None) -> Job:
    return Job(spec_path, spec, log, *args, prefix=prefix, jvm_options=jvm_options)


def run_to_end(spec_path: Path, spec: JobSpec, log: Path, *args: str, timeout: float = 600,
               prefix: list[str] | None = None) -> tuple[int, Job]:
    job = spawn(spec_path, spec, log, *args, prefix=prefix)
    try:
        return job.wait(timeout), job
    except BaseException:  # interrupted (a test timeout, Ctrl-C): never leave the job behind
        job.kill()
        raise


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
    """The job's streaming queries (gold is one query for all views)."""
    return list(QUERIES)


def checkpoint_state(spec: JobSpec) -> dict[str, tuple[int, int]]:
    """(last planned batch, last committed batch) per query, from its checkpoint."""
    root = Path(spec.lake) / "_checkpoints" / spec.pipeline
    return {q: (_max_id(root / q / "live" / "offsets"), _max_id(root / q / "live" / "commits"))
            for q in query_names(spec)}


def committed_records(spec: JobSpec) -> dict[str, int]:
    """Records each Kafka-reading query has committed so far (from its checkpoint's offsets log)."""
    root = Path(spec.lake) / "_checkpoints" / spec.pipeline
    out = {}
    for query in QUERIES:
        committed = _max_id(root / query / "live" / "commits")
        offsets = _offsets(root / query / "live" / "offsets" / str(committed)) if committed >= 0 else None
        out[query] = sum((offsets or {}).values())
    return out


def observe_phase(spec: JobSpec, job: Job) -> list[str]:
    """Where the job stood when it died. Before its queries ran: which start-up step. After: per query,
    inside a batch (and whether that batch's Delta transaction was already committed while its checkpoint
    commit was not: the window exactly-once must cover) or idle between batches."""
    if job.started_at is None:
        spark_up = any(line.startswith("SPARK") for _, line in job.lines)
        return ["startup: tables, checkpoints, ClickHouse DDL, query start" if spark_up
                else "startup: JVM and Spark session"]
    state = checkpoint_state(spec)
    lake = Path(spec.lake) / spec.pipeline
    txns = {"bronze": _delta_txn(lake / "bronze"), "silver": _delta_txn(lake / "silver"),
            "dead_letter": _delta_txn(lake / "dead_letter")}
    labels = []
    for query, (planned, committed) in state.items():
        if planned > committed:
            table_txn = None
            if query == "bronze":
                table_txn = max(txns["bronze"].values(), default=-1)
            elif query == "silver":
                table_txn = max((v for k, v in txns["silver"].items() if ":silver:" in k), default=-1)
            if query == "silver" and table_txn is not None and table_txn >= planned:
                dead = max((v for k, v in txns["dead_letter"].items() if ":silver:" in k), default=-1)
                labels.append("silver: silver and dead-letter committed, checkpoint commit pending" if dead >= planned
                              else "silver: silver committed, dead-letter write pending (or none), checkpoint pending")
            elif table_txn is not None and table_txn >= planned:
                labels.append(f"{query}: Delta committed, checkpoint commit pending")
            elif query == "gold":
                labels.append("gold: inside a batch or its checkpoint commit pending (ClickHouse writes)")
            else:
                labels.append(f"{query}: inside a batch (before its Delta commit)")
    if not labels:
        labels.append("between batches (all queries idle)")
    return labels


@dataclass
class KillRecord:
    number: int
    point: str
    detail: str                  # what the hook saw when it fired (or how the parent chose the moment)
    fired: bool                  # the kill landed at its point (False: the point never came, killed anyway)
    seconds_alive: float
    cpu_seconds: float           # CPU used by the job's process group until the kill (load-independent cost)
    batches_seen: int
    phase: list[str] = field(default_factory=list)


#: The kill points the crash loop visits; ``startup`` is timed by the parent, the rest are hooks.
LOOP_POINTS = KILL_POINTS
VIEW_NAMES = ("card_velocity_1m", "card_velocity_5m_sliding")
HOOKED_QUERIES = QUERIES  # the views are written inside the gold query's batches


#: The windows exactly-once hinges on (a write committed, its checkpoint commit not): visited first.
PRIORITY_POINTS = ("bronze.committed", "silver.committed", "gold.committed", "view.inserted", "silver.between",
                   "view.insert")


def kill_schedule(kills: int, rng: random.Random) -> list[str]:
    """Every kill point once, the priority points first (each group in a seeded order), then seeded picks
    among the hooked points."""
    first = list(PRIORITY_POINTS)
    rest = [p for p in LOOP_POINTS if p not in PRIORITY_POINTS]
    rng.shuffle(first)
    rng.shuffle(rest)
    extra = [rng.choice(LOOP_POINTS[1:]) for _ in range(max(0, kills - len(LOOP_POINTS)))]
    return (first + rest + extra)[:kills]


#: Per kill point: did a kill there land in the window it aims at? Judged by the phase read from the
#: checkpoints and Delta logs after the kill, or by what the hook saw in the instant before it fired.
def _window(point: str):
    return {
        "startup": lambda k: any(p.startswith("startup") for p in k.phase) or "before all queries" in k.detail,
        "bronze.during": lambda k: "bronze: inside a batch (before its Delta commit)" in k.phase,
        "bronze.committed": lambda k: "bronze: Delta committed, checkpoint commit pending" in k.phase,
        "silver.during": lambda k: "silver: inside a batch (before its Delta commit)" in k.phase,
        "silver.between": lambda k: any(p.startswith("silver: silver committed, dead-letter write pending")
                                        for p in k.phase),
        "silver.committed": lambda k: "silver: silver and dead-letter committed, checkpoint commit pending" in k.phase,
        "gold.during": lambda k: "before any ClickHouse write, checkpoint commit pending" in k.detail,
        "gold.committed": lambda k: "every view written, checkpoint commit pending" in k.detail,
        "view.during": lambda k: "public insert not begun, checkpoint commit pending" in k.detail,
        "view.insert": lambda k: "inside the insert" in k.detail,
        "view.inserted": lambda k: "state table write pending, checkpoint commit pending" in k.detail,
        "idle": lambda k: "finished, next batch" in k.detail,
    }[point]


def window_hit(record: KillRecord) -> bool:
    return record.fired and _window(record.point)(record)


def kill_arguments(point: str, rng: random.Random) -> tuple[list[str], str]:
    """The job's --kill-* arguments for ``point`` (seeded delay, batch and query), and a short label."""
    skip = rng.choice((0, 0, 1))  # mostly the first chance (often a replay), sometimes the one after
    query, delay = None, 0.0
    if point == "view.during":
        query = rng.choice(VIEW_NAMES)
    elif point == "view.insert":
        query, delay = rng.choice(VIEW_NAMES), rng.uniform(0.0, 0.006)
    elif point == "view.inserted":
        query = rng.choice(VIEW_NAMES)
    elif point == "idle":
        query = rng.choice(HOOKED_QUERIES)
    args = ["--kill-at", point, "--kill-skip", str(skip), "--kill-delay", f"{delay:.3f}"]
    if query:
        args += ["--kill-query", query]
    return args, f"skip {skip}" + (f", {query}" if query else "") + (f", +{delay:.2f}s" if delay else "")


def _layer_of(point: str, args: list[str]) -> str | None:
    """The Kafka-reading query whose records a kill point needs (the views are part of the gold query)."""
    name = args[args.index("--kill-query") + 1] if point == "idle" else point.split(".")[0]
    return "gold" if name in ("view", *VIEW_NAMES) else name if name in QUERIES else None


def crash_loop(spec_path: Path, spec: JobSpec, kills: int, seed: int, logs: Path, say=print,
               refill=None, hook_timeout: float = 300) -> list[KillRecord]:
    """Start the live job and SIGKILL its whole process group ``kills`` times, each time at a kill point
    of the seeded schedule (hooks in the job fire at the point; ``startup`` is timed from here), and
    restart it. ``refill(layer)`` is called before each start to keep records waiting for the Kafka-reading
    query (``bronze``, ``silver`` or ``gold``; None: any) whose batch the next kill point needs."""
    rng = random.Random(seed)
    records: list[KillRecord] = []
    logs.mkdir(parents=True, exist_ok=True)
    for number, point in enumerate(kill_schedule(kills, rng), 1):
        if point == "startup":
            args, label = [], ""
            # The queries take 4 s or more to start after the session on a quiet 2-core machine (7 s and more
            # on a loaded one); a later kill would land after start-up, not in it.
            delay = rng.uniform(0.0, 2.0)
        else:
            args, label = kill_arguments(point, rng)
        if refill is not None:
            refill(_layer_of(point, args))
        job = spawn(spec_path, spec, logs / f"kill-{number:02d}.log", *args,
                    jvm_options=crash_jvm_options())
        try:
            if point == "startup":  # table creation, checkpoints, ClickHouse DDL, query start
                spark_up = job.wait_marker("SPARK", timeout=hook_timeout)
                alive = spark_up and job.sleep_alive(delay)
                fired = alive and job.started_at is None
                label = f"+{delay:.1f}s after the Spark session, " + ("before" if fired else "after") + \
                    " all queries started"
                cpu = job.group_cpu_seconds()
                job.kill()
                code = -signal.SIGKILL if alive else job.wait(5)
            else:
                code = job.wait_exit(hook_timeout)
                fired = code == -signal.SIGKILL and job.killed_line() is not None
                cpu = 0.0
                if code is None:  # the point never came within the timeout: kill anyway, say so
                    cpu = job.group_cpu_seconds()
                    job.kill()
                    code = -signal.SIGKILL
                    label += f"; the hook did not fire within {hook_timeout:.0f}s"
        except BaseException:  # interrupted (Ctrl-C, SIGTERM, a failed wait): never leave the job behind
            job.kill()
            raise
        if code != -signal.SIGKILL:
            raise AssertionError(f"kill {number} ({point}): the job ended by itself (exit {code}) before the kill:\n"
                                 f"{job.stderr_tail()}\n{job.hook_errors()}")
        killed = job.killed_line()
        if killed is not None:
            cpu = float(killed.split()[2].removeprefix("cpu="))
            label = killed.split(" ", 3)[3] + (f" [{label}]" if label else "")
        record = KillRecord(number, point, label, fired, round(job.ended_at - job.spawned, 1), round(cpu, 1),
                            job.batches(), observe_phase(spec, job))
        records.append(record)
        say(f"kill {number:2d} {point:16s} {'' if fired else 'NOT AT POINT '}alive {record.seconds_alive:5.1f}s "
            f"cpu {record.cpu_seconds:5.1f}s: {record.detail}")
    return records


def phase_summary(records: list[KillRecord]) -> Counter[str]:
    """How many kills found each query in each state (a kill counts once per label)."""
    counts: Counter[str] = Counter()
    for record in records:
        counts.update(record.phase)
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
        "silver_expected": len(valid_ids),
        "dead_expected": len(expected_dead),
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


def read_topic(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, bytes]]:
    """Every record of ``topic`` as (partition, offset, key, value), read with confluent-kafka."""
    from tests.integration.kafka_helpers import consume_all

    return consume_all(bootstrap, topic)


#: Event-time spacing of produced events: a 200-record micro-batch is 10 s of event time, far below the
#: 2-minute watermark (nothing is late).
EPS = 20.0


class Feed:
    """Produces rounds of payment events (5% duplicates, 3% malformed) with event times continuing where
    the last round stopped, and remembers where each round ended in each partition."""

    def __init__(self, ctx, seed: int, events_per_second: float = EPS) -> None:
        self.ctx, self.seed, self.eps = ctx, seed, events_per_second
        # A day back: max_future compares event time with the Kafka timestamp (now).
        self.start = (datetime.now(timezone.utc) - timedelta(days=1)).replace(second=0, microsecond=0)
        self.produced = 0
        self.ends: list[dict[int, int]] = []

    def round(self, events: int) -> int:
        from kappalake.generator import GeneratorOptions
        from kappalake.io.kafka.admin import end_offsets
        from kappalake.pipelines.produce import produce

        summary = produce(self.ctx, events=events, start_time=self.start + timedelta(seconds=self.produced / self.eps),
                          events_per_second=self.eps, options=GeneratorOptions(
                              seed=self.seed + len(self.ends), duplicate_fraction=0.05, malformed_fraction=0.03))
        self.produced += summary.sent
        self.ends.append({p: high for p, (_, high) in end_offsets(self.ctx.bootstrap_servers(),
                                                                   self.ctx.pipeline.source.topics[0]).items()})
        return summary.sent


def records_by_round(bootstrap: str, topic: str, ends: list[dict[int, int]]) -> tuple[list, list[list[bytes]]]:
    """All records of the topic, and their values per produce round (``ends``: the partitions' end
    offsets after each round)."""
    records = read_topic(bootstrap, topic)
    rounds: list[list[bytes]] = [[] for _ in ends] or [[]]
    for p, o, _, v in records:
        rounds[next((i for i, end in enumerate(ends) if o < end.get(p, 0)), len(rounds) - 1)].append(v)
    return records, rounds


def expected_events(spec: JobSpec, rounds: list[list[bytes]]):
    """The unique valid events (pandas, PII pseudonymised) of the produced values, per produce round, by the
    independent reference; a single round gets its earliest event split off as round 0, since the
    reference judges lateness against earlier rounds (nothing is late against the earliest event)."""
    from tests.integration.gold_reference import unique_events

    pipeline = pipeline_for(spec)
    events = unique_events(rounds, pipeline, spec.pii_key)
    if events["_round"].nunique() == 1:
        events = events.assign(_round=events["_round"] + 1)
        events.loc[events[pipeline.events.time].idxmin(), "_round"] = 0
    return events


def gold_differences(spec: JobSpec, gold: dict[str, Any], events) -> dict[str, list[str]]:
    """Per view, how ClickHouse FINAL differs from the reference windows (empty lists: identical). Counts
    exact, sums and maxima to the cent, approx_count_distinct within 1 on at most 1% of the windows."""
    import math

    from tests.integration.gold_reference import as_naive_utc, expected_view

    pipeline = pipeline_for(spec)
    out: dict[str, list[str]] = {}
    for name, view in pipeline.gold.views.items():
        problems: list[str] = []
        expected, late = expected_view(events, pipeline, view)
        if len(late):
            problems.append(f"the reference has {len(late)} late (event, window) pairs")
        actual, raw_rows = gold[name]
        keys = [*view.group_by, "window_start", "window_end"]
        expected = expected.assign(window_start=expected.window_start.map(as_naive_utc),
                                   window_end=expected.window_end.map(as_naive_utc))
        actual = actual.assign(window_start=actual.window_start.map(as_naive_utc),
                               window_end=actual.window_end.map(as_naive_utc))
        if len(actual) != len(expected):
            problems.append(f"{len(actual)} rows in ClickHouse FINAL, {len(expected)} expected")
        if raw_rows < len(actual):
            problems.append(f"{raw_rows} raw rows < {len(actual)} FINAL rows")
        merged = expected.merge(actual, on=keys, suffixes=("_exp", "_act"), how="outer", indicator=True)
        if (merged["_merge"] != "both").any():
            problems.append(f"{int((merged._merge == 'left_only').sum())} windows missing, "
                            f"{int((merged._merge == 'right_only').sum())} unexpected")
        both = merged[merged["_merge"] == "both"]
        for metric, spec_metric in view.metrics.items():
            exp, act = both[f"{metric}_exp"], both[f"{metric}_act"]
            if spec_metric.fn == "count":
                wrong = int((exp.astype("int64") != act.astype("int64")).sum())
            elif spec_metric.fn == "approx_count_distinct":  # HyperLogLog++: exact for small sets nearly always
                off = (exp.astype("int64") - act.astype("int64")).abs()
                wrong = int((off > 1).sum()) + (int((off > 0).sum()) if (off > 0).mean() > 0.01 else 0)
            else:
                wrong = sum(not math.isclose(e, a, rel_tol=1e-9, abs_tol=0.006)
                            for e, a in zip(exp.astype(float), act.astype(float), strict=True))
            if wrong:
                problems.append(f"{metric}: {wrong} windows differ")
        out[name] = problems
    return out


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
