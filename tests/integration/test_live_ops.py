"""Operating a live pipeline through the real CLI: gold read through the local ClickHouse endpoint from other
processes while the job runs, and clean stops (SIGTERM / SIGINT in the middle of a micro-batch) that close the
run and resume exactly once.

One local stack (broker + ClickHouse endpoint) in the module's own data dir, started with ``kappalake stack up``.
A micro-batch is "in the middle" when its checkpoint holds ``offsets/N`` and not yet ``commits/N``: the signal
is sent at that moment, seen from outside the job as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from deltalake import DeltaTable

from kappalake.runtime.paths import HomeLayout
from kappalake.io.kafka.admin import end_offsets
from kappalake.runtime.stack import ClickHouseEndpoint, LocalStack
from tests.integration.cli_runner import Cli, stack_cli

VIEW_TABLE = "payments_card_velocity_1m"
FORBIDDEN = ("Traceback", "py4j", "Py4J", "ERROR", "Exception in thread")


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, test_home: HomeLayout) -> Iterator[Cli]:
    with stack_cli(tmp_path_factory.mktemp("live-ops"), test_home.cache) as runner:
        yield runner


def checkpoint(cli: Cli, layer: str) -> Path:
    return cli.home / "lake" / "_checkpoints" / "payments" / layer / "live"


def next_batch(cli: Cli, layer: str) -> int:
    commits = checkpoint(cli, layer) / "commits"
    done = [int(p.name) for p in commits.iterdir() if p.name.isdigit()] if commits.exists() else []
    return max(done, default=-1) + 1


def wait_mid_batch(cli: Cli, layer: str, batch: int, job: subprocess.Popen[str], timeout: float = 300) -> None:
    """Return while ``batch`` of ``layer`` runs: its offsets are logged and its commit is not."""
    ck = checkpoint(cli, layer)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, f"the job ended (exit {job.returncode}) before batch {batch} of {layer}"
        if (ck / "offsets" / str(batch)).exists() and not (ck / "commits" / str(batch)).exists():
            return
        time.sleep(0.02)
    raise AssertionError(f"batch {batch} of {layer} never ran")


def signal_mid_batch(cli: Cli, job: subprocess.Popen[str], layer: str, signum: int, log: Path,
                     timeout: float = 240) -> tuple[int, str]:
    """Send ``signum`` while ``layer``'s next batch runs; wait for the job to end. Returns that batch's id
    and the job's output; the job's process group is killed if it is still there."""
    try:
        batch = next_batch(cli, layer)
        wait_mid_batch(cli, layer, batch, job)
        job.send_signal(signum)
        try:
            job.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the job did not stop within {timeout}s of {signal.Signals(signum).name}:\n"
                                 f"{log.read_text()[-3000:]}") from None
        return batch, log.read_text()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)


def assert_clean(output: str) -> None:
    bad = [line for line in output.splitlines() if any(word in line for word in FORBIDDEN)]
    assert not bad, "the stop printed errors or tracebacks:\n" + "\n".join(bad[:20])


def watched_sums(text: str) -> list[int]:
    """``query --watch --format csv`` output: one CSV block (header first) per refresh -> txn_count sum each."""
    sums: list[int] = []
    column = None
    for line in text.splitlines():
        cells = line.split(",")
        if "txn_count" in cells:
            column = cells.index("txn_count")
            sums.append(0)
        elif column is not None and len(cells) > column and cells[column].isdigit():
            sums[-1] += int(cells[column])
    assert len(sums) >= 2, f"--watch refreshed {len(sums)} time(s):\n{text[-2000:]}"
    return sums


def run_record(cli: Cli, layer: str) -> dict:
    return json.loads((cli.home / "runs" / "payments" / layer / "last-run.json").read_text())


def delta_rows(cli: Cli, table: str) -> int:
    return DeltaTable(str(cli.home / "lake" / "payments" / table)).to_pyarrow_table().num_rows


def test_sigterm_mid_batch_finishes_the_batch_closes_the_run_and_resumes_exactly_once(cli: Cli, tmp_path: Path) -> None:
    cli("produce", "payments", "--events", "40000", "--seed", "11")
    log = tmp_path / "job.log"
    job = cli.start("run", "payments", "--layer", "bronze,silver", "--trigger", "1 second", log=log)
    batch, output = signal_mid_batch(cli, job, "silver", signal.SIGTERM, log)
    assert job.returncode == 143, output[-3000:]
    assert "stopped on SIGTERM: payments.bronze after batch" in output
    assert "a restart resumes from the checkpoints" in output
    assert_clean(output)
    # stopped after the batch it was running: that batch committed (sink and checkpoint)
    assert (checkpoint(cli, "silver") / "commits" / str(batch)).exists()
    for layer in ("bronze", "silver"):
        record = run_record(cli, layer)
        assert record["finished_at"] and record["stopped_by"] == "SIGTERM" and record["error"] is None, record
    status = cli("status", "payments")
    assert "stopped (SIGTERM)" in status.stdout

    cli("produce", "payments", "--events", "10000", "--seed", "12")
    cli("run", "payments", "--layer", "bronze,silver", "--available-now")
    assert delta_rows(cli, "bronze") == 50000
    assert delta_rows(cli, "silver") == 50000  # distinct events (seeds differ), none malformed: nothing lost or doubled


def test_live_gold_is_read_through_the_endpoint_while_it_runs_and_sigint_stops_it_cleanly(
        cli: Cli, tmp_path: Path) -> None:
    layout = HomeLayout(home=cli.home, cache=Path(cli.env["KAPPALAKE_CACHE"]))
    endpoint = ClickHouseEndpoint(layout)
    before = sum(high for _, high in end_offsets(LocalStack(layout).bootstrap_servers(), "payments").values())
    reader = clickhouse_connect.get_client(dsn=endpoint.dsn())  # this test process: not the job's
    log = tmp_path / "gold.log"

    def counted() -> int:
        if not reader.command(f"EXISTS TABLE {VIEW_TABLE}"):
            return 0
        return int(reader.command(f"SELECT sum(txn_count) FROM {VIEW_TABLE} FINAL") or 0)

    def wait_for(expected: int, timeout: float = 300) -> list[int]:
        seen, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert job.poll() is None, f"the gold job ended (exit {job.returncode}):\n{log.read_text()[-3000:]}"
            seen.append(counted())
            if seen[-1] >= expected:
                return seen
            time.sleep(0.5)
        raise AssertionError(f"gold reached {seen[-1:]} of {expected} events")

    cli("produce", "payments", "--events", "20000", "--seed", "21")
    job = cli.start("run", "payments", "--layer", "gold", "--trigger", "1 second", log=log)
    try:
        first = wait_for(before + 20000)
        assert first[-1] == before + 20000, first
        queried = cli("query", "payments", "card_velocity_1m", "--format", "json", "--limit", "1000000")
        rows = [json.loads(line) for line in queried.stdout.splitlines()]
        assert rows and sum(row["txn_count"] for row in rows) == before + 20000  # the CLI, a third process

        watch_log = tmp_path / "watch.csv"
        watcher = cli.start("query", "payments", "card_velocity_1m", "--watch", "--every", "0.5s", "--format", "csv",
                            "--limit", "1000000", log=watch_log)
        time.sleep(3)
        cli("produce", "payments", "--events", "20000", "--seed", "22")
        grown = wait_for(before + 40000)
        assert grown[-1] == before + 40000, grown  # windows grow while the job runs, read from outside it
        time.sleep(2)
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=30) == 0, watch_log.read_text()[-2000:]
        sums = watched_sums(watch_log.read_text())
        assert sums[0] == before + 20000 and sums[-1] == before + 40000, sums  # --watch saw the windows grow

        cli("produce", "payments", "--events", "20000", "--seed", "23")
    except BaseException:
        os.killpg(job.pid, signal.SIGKILL)
        raise
    batch, output = signal_mid_batch(cli, job, "gold", signal.SIGINT, log)
    assert job.returncode == 130, output[-3000:]
    assert (checkpoint(cli, "gold") / "commits" / str(batch)).exists()
    assert "stopped on SIGINT: payments.gold after batch" in output
    assert_clean(output)
    record = run_record(cli, "gold")
    assert record["finished_at"] and record["stopped_by"] == "SIGINT" and record["error"] is None, record

    cli("run", "payments", "--layer", "gold", "--available-now")
    assert counted() == before + 60000  # every event in exactly one 1-minute window: nothing lost, nothing doubled
    late = DeltaTable(str(cli.home / "lake" / "payments" / "late_events"))
    assert late.to_pyarrow_table().num_rows == 0
