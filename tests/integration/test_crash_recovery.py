"""Crash recovery with the real broker, Spark, Delta and chDB: the job process is SIGKILLed and restarted
again and again, the broker restarts under a running job, ClickHouse is unreachable, the storage root is
read-only; afterwards nothing is lost or duplicated anywhere.

The job runs in a subprocess (``crash_job.py``) with its own chDB directory: chDB allows one process per
directory and this test process already holds the session's. Its ClickHouse is read after it died, by
another subprocess. Checked at the end of each scenario:

* bronze holds every produced record exactly once (no lost or repeated (partition, offset));
* silver holds exactly the unique valid event ids, once each; the dead-letter table exactly the malformed
  records, once each; no late events;
* both payments views in ClickHouse (``FINAL``) equal the independent pandas reference (a batch applied
  twice to a view's window state would double its counts and sums, one never applied would miss them).

Kill count and seed: ``KAPPALAKE_CRASH_KILLS`` (default 20), ``KAPPALAKE_CRASH_SEED``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
from deltalake import DeltaTable

from kappalake.errors import ClickHouseUnavailable
from kappalake.runtime.context import RunContext
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import ClickHouseEndpoint, LocalStack
from tests.integration.crash_job import (
    Feed, JobSpec, committed_records, crash_loop, dump_gold_tables, expected_events, gold_differences,
    lake_accounting, phase_summary, records_by_round, run_to_end, spawn, window_hit,
)

KILLS = int(os.environ.get("KAPPALAKE_CRASH_KILLS", "20"))
SEED = int(os.environ.get("KAPPALAKE_CRASH_SEED", "20261121"))
MAX_OFFSETS = 200  # records per micro-batch: small batches, so a kill soon after start lands inside one
TABLES = ("bronze", "silver", "dead_letter", "late_events")

pytestmark = pytest.mark.slow


@pytest.fixture
def job(tmp_path: Path, test_home, kafka_stack, topic_name: str, make_context) -> Iterator[tuple[Path, JobSpec, RunContext]]:
    """The job spec (own storage root) and a context on the same topic for producing. The job's gold sink
    writes through a local ClickHouse HTTP endpoint of its own (a separate process that survives the
    kills, as a server would), the default path of the local target."""
    endpoint = ClickHouseEndpoint(HomeLayout(home=tmp_path / "ch-home", cache=test_home.cache))
    endpoint.up()
    spec = JobSpec(pipeline="payments", topic=topic_name, lake=str(tmp_path / "lake"),
                   dsn=endpoint.dsn(), stack_home=str(test_home.home),
                   job_home=str(tmp_path / "job-home"), max_offsets=MAX_OFFSETS)
    try:
        yield spec.write(tmp_path / "spec.json"), spec, make_context("payments", topic_name)
    finally:
        endpoint.down()


def drain(spec_path: Path, spec: JobSpec, tmp_path: Path, name: str = "drain") -> None:
    """An availableNow run to the end; it must succeed."""
    code, finished = run_to_end(spec_path, spec, tmp_path / f"{name}.log", "--available-now", "--max-offsets", "5000",
                                timeout=900)
    assert code == 0, f"the {name} run failed (exit {code}):\n{finished.stderr_tail()}"


def verify_everything(spec_path: Path, spec: JobSpec, tmp_path: Path, bootstrap: str,
                      ends: list[dict[int, int]]) -> dict:
    """Bronze, silver, dead letters, late events and both ClickHouse views against the produced records."""
    records, rounds = records_by_round(bootstrap, spec.topic, ends)
    events = expected_events(spec, rounds)
    accounting = lake_accounting(spec, records, set(events.event_id))
    problems = {k: v for k, v in accounting.items() if k.endswith(("_lost", "_duplicated", "_foreign")) and v}
    assert not problems, f"the lake does not match the produced records: {problems}\n{accounting}"
    assert accounting["dead_rows"] > 0 and accounting["silver_rows"] == len(events)

    lake = Path(spec.lake) / spec.pipeline
    assert len(DeltaTable(str(lake / "late_events")).to_pandas()) == 0, "no event is late in these scenarios"

    gold = dump_gold_tables(spec_path, spec, tmp_path / f"gold-{time.monotonic_ns()}")
    differences = gold_differences(spec, gold, events)
    assert not any(differences.values()), f"ClickHouse FINAL differs from the reference: {differences}"
    return accounting


# --------------------------------------------------------------------------- read-only storage root

def set_writable(root: Path, writable: bool) -> None:
    paths = [root, *root.rglob("*")]
    for path in (paths if writable else reversed(paths)):  # files before their folder when locking
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        path.chmod(stat.S_IMODE(mode) | stat.S_IWUSR if writable else stat.S_IMODE(mode) & ~bits)


def without_root_override() -> list[str]:
    """root ignores file modes: run the job without CAP_DAC_OVERRIDE so the chmod applies to it too."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root: setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE for this test"
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def check_read_only_root_fails_cleanly(spec_path: Path, spec: JobSpec, tmp_path: Path, feed: Feed) -> None:
    """With new records waiting and the storage root made read-only, the job fails with a message naming the
    root; every Delta table keeps its version and rows (the logs stay readable). Checked on the tables the
    crash loop left, so that what it proves holds for a lake that has been through twenty kills."""
    lake = Path(spec.lake)
    tables = {name: str(lake / spec.pipeline / name) for name in TABLES}
    versions = {name: DeltaTable(path).version() for name, path in tables.items()}
    rows = {name: len(DeltaTable(path).to_pandas()) for name, path in tables.items()}

    feed.round(200)
    set_writable(lake, False)
    try:
        code, failed = run_to_end(spec_path, spec, tmp_path / "read-only.log", "--available-now",
                                  "--max-offsets", "5000", timeout=600, prefix=without_root_override())
    finally:
        set_writable(lake, True)
    error = failed.error_line()
    assert code != 0, f"the job succeeded on a read-only storage root:\n{failed.stderr_tail()}"
    assert error, f"the job failed without a clear message (exit {code}):\n{failed.stderr_tail()}"
    assert "ermission" in error or "read-only" in error.lower(), error
    assert str(lake) in error, f"the message does not say where: {error}"
    assert error.startswith("JOB ERROR: pipeline 'payments' failed: cannot write "), error
    assert "Traceback" not in failed.log.read_text(errors="replace").split("JOB ERROR:")[-1], \
        f"not a clear message: {error[:1000]}"

    for name, path in tables.items():  # the Delta logs are intact and unchanged
        table = DeltaTable(path)
        assert table.version() == versions[name], f"{name}: version {table.version()} != {versions[name]}"
        assert len(table.to_pandas()) == rows[name], name


# --------------------------------------------------------------------------- SIGKILL, many times

@pytest.mark.timeout(3000)
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(job, bootstrap: str, tmp_path: Path) -> None:
    """SIGKILL the job (bronze, silver and gold in one Spark application) at KILLS seeded kill points, each in
    a chosen window of one query, restarting it each time; then run it once on a read-only storage root
    (clear error, tables intact); then drain and compare every layer."""
    spec_path, spec, ctx = job
    feed = Feed(ctx, seed=31)
    feed.round(1500)
    started = time.monotonic()
    lines: list[str] = []

    summary = tmp_path / "summary.txt"  # kept with the test's files: the kill table of a passing run

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)
        with summary.open("a") as out:
            out.write(line + "\n")

    def refill(layer: str | None) -> None:  # keep three batches or more waiting for the query to be killed
        committed = committed_records(spec)
        if feed.produced - (committed[layer] if layer else min(committed.values())) < 3 * MAX_OFFSETS:
            feed.round(600)

    kills = crash_loop(spec_path, spec, KILLS, SEED, tmp_path / "logs", say=say, refill=refill)
    (tmp_path / "kills.json").write_text(json.dumps([asdict(k) for k in kills], indent=1))
    seconds = time.monotonic() - started
    say(f"{len(kills)} kills in {seconds:.0f}s ({seconds / max(1, len(kills)):.1f}s each, "
        f"{sum(k.cpu_seconds for k in kills) / max(1, len(kills)):.1f} CPU-s each); {feed.produced} records produced")
    for label, count in sorted(phase_summary(kills).items(), key=lambda kv: -kv[1]):
        say(f"  {count:3d}  {label}")

    assert len(kills) == KILLS
    missed = [k.number for k in kills if not k.fired]
    assert len(missed) <= KILLS // 10, f"kills {missed} did not come at their point:\n" + "\n".join(lines)
    not_hit = sorted({k.point for k in kills} - {k.point for k in kills if window_hit(k)})
    assert not not_hit, f"no kill at {not_hit} landed in the window it aims at:\n" + "\n".join(lines)

    check_read_only_root_fails_cleanly(spec_path, spec, tmp_path, feed)
    drain(spec_path, spec, tmp_path)
    accounting = verify_everything(spec_path, spec, tmp_path, bootstrap, feed.ends)
    say(f"after {KILLS} kills, a run on a read-only root and a drain: {accounting}")


# --------------------------------------------------------------------------- the broker restarts

def restore_broker(stack: LocalStack, previous) -> None:
    """Whatever happened, leave the session's broker running on its old port (other tests hold its address):
    a stale state file makes ``up`` reuse the ports of the broker it names."""
    status = stack.status()
    if status.state == "running" and status.broker is not None and status.broker.port == previous.port:
        return
    stack.down()
    stack.state_file.write_text(json.dumps(asdict(previous)))  # the old pid is gone: 'stale'
    stack.up()
    assert stack.status().broker.port == previous.port, "could not bring the session's broker back on its port"


def new_batch(job, query: str, after: int) -> bool:
    """The job reported a non-empty batch of ``query`` among its output lines from index ``after`` on."""
    return any(line.startswith(f"BATCH payments.{query} ") and not line.endswith(" 0") for _, line in job.lines[after:])


def wait_for(condition, job, timeout: float, what: str) -> None:
    """Wait (generously: the machine may be loaded) until ``condition()`` while the job runs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert job.process.poll() is None, f"the job ended (exit {job.process.returncode}) while waiting for " \
                                           f"{what}:\n{job.stderr_tail()}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f}s:\n{job.stderr_tail()}"
        time.sleep(0.1)


@pytest.mark.timeout(1200)
def test_broker_restart_under_a_running_job_loses_nothing(job, kafka_stack: LocalStack, bootstrap: str,
                                                          tmp_path: Path) -> None:
    """'kappalake stack down' + 'stack up' while the job runs: the broker comes back on the same port with
    its data, the job goes on by itself (or fails loudly and recovers on restart); nothing lost or doubled."""
    spec_path, spec, ctx = job
    feed = Feed(ctx, seed=41)
    feed.round(600)
    previous = kafka_stack.status().broker
    running = spawn(spec_path, spec, tmp_path / "live.log")
    outcome = None
    try:
        wait_for(lambda: new_batch(running, "bronze", 0), running, 300, "bronze batch before the restart")
        assert kafka_stack.down() == "running"
        stopped = time.monotonic()
        now = kafka_stack.up().broker
        print(f"broker down for {time.monotonic() - stopped:.0f}s")
        assert now is not None and (now.port, now.controller_port) == (previous.port, previous.controller_port), \
            f"the broker moved from port {previous.port} to {now and now.port}: clients holding its address are " \
            "stranded"
        mark = len(running.lines)
        feed.round(400)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and running.process.poll() is None and not (
                new_batch(running, "bronze", mark) and new_batch(running, "silver", mark)
                and new_batch(running, "gold", mark)):
            time.sleep(0.2)
        if running.process.poll() is not None:  # it stopped: it must say why
            error = running.error_line()
            assert running.process.returncode not in (0, None) and error, \
                f"the job ended silently after the broker restart:\n{running.stderr_tail()}"
            outcome = f"the job failed loudly after the broker restart: {error}"
        else:
            assert new_batch(running, "bronze", mark), \
                f"the job neither read the records produced after the restart nor failed within 240 s:\n" \
                f"{running.stderr_tail(15)}"
            outcome = "the running job carried on by itself after the broker restart"
    finally:
        if running.process.poll() is None:
            running.kill()
        else:
            running.wait(10)
        restore_broker(kafka_stack, previous)
    print(outcome)
    drain(spec_path, spec, tmp_path)
    verify_everything(spec_path, spec, tmp_path, bootstrap, feed.ends)


# --------------------------------------------------------------------------- ClickHouse unreachable

@pytest.mark.timeout(1200)
def test_unreachable_clickhouse_retries_then_fails_loudly_and_a_restart_completes_gold(
        job, bootstrap: str, tmp_path: Path) -> None:
    """ClickHouse refuses connections (injected into the job's client): a short outage is ridden out by the
    sink's retries; a long one exhausts them, the query fails, the job exits with ClickHouseUnavailable and
    a clear message; a restart replays the failed batches: gold equals the reference, nothing doubled."""
    spec_path, spec, ctx = job
    feed = Feed(ctx, seed=51)
    feed.round(1200)
    down = tmp_path / "clickhouse-down"
    running = spawn(spec_path, spec, tmp_path / "outage.log", "--outage-flag", str(down))

    def refused() -> int:
        return sum(1 for _, line in running.lines if line.startswith("REFUSED "))

    try:
        wait_for(lambda: new_batch(running, "gold", 0), running, 300, "gold batches")
        feed.round(300)  # records for the batches during and after the outage
        down.touch()  # a short outage: two refused attempts, then it is back
        wait_for(lambda: refused() >= 2, running, 240, "refused ClickHouse calls")
        down.unlink()
        mark = len(running.lines)
        wait_for(lambda: new_batch(running, "gold", mark), running, 240, "gold batch after the short outage")
        assert "retrying in" in running.log.read_text(errors="replace"), "the sink did not retry"

        down.touch()  # a long outage: the retries run out (on the records produced now, if none are left)
        feed.round(300)
        code = running.wait_exit(300)
        assert code is not None, f"the job kept running through a long ClickHouse outage:\n{running.stderr_tail()}"
    finally:
        if running.process.poll() is None:
            running.kill()
        down.unlink(missing_ok=True)
    error = running.error_line()
    log = running.log.read_text(errors="replace")
    assert code != 0 and error, f"exit {code} without a message:\n{running.stderr_tail()}"
    assert "ClickHouse" in error and "failed 6 times" in error and "replayed from the checkpoint" in error, error
    assert "Traceback" not in log.split("JOB ERROR:")[-1], f"not a clear message: {error[:1000]}"

    drain(spec_path, spec, tmp_path, "after-outage")
    verify_everything(spec_path, spec, tmp_path, bootstrap, feed.ends)
    # Checked last, so that the recovery above is judged even while this fails: the runner must keep the
    # class (exit code) of a KappalakeError raised inside foreachBatch (ops.failures.raised_kappalake_error).
    assert code == ClickHouseUnavailable.exit_code, \
        f"exit {code}, not ClickHouseUnavailable's {ClickHouseUnavailable.exit_code}: {error}"
