"""``kappalake maintain`` next to a running job, through the real CLI on the real broker, Delta and the local
ClickHouse endpoint: Delta compaction and VACUUM while the job writes lose and double nothing; a retention
below the safety margin is refused before anything runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from deltalake import DeltaTable

from kappalake.ops.tables import delta_table_stats
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import ClickHouseEndpoint
from tests.integration.cli_runner import REPO, Cli, stack_cli

pytestmark = pytest.mark.slow

VIEW_TABLE = "payments_card_velocity_1m"


def conf_with(root: Path, name: str, maintenance: str) -> Path:
    """A copy of the project's conf whose payments pipeline has ``maintenance`` (YAML lines)."""
    conf = root / name
    shutil.copytree(REPO / "conf", conf)
    with open(conf / "pipelines" / "payments.yml", "a") as handle:
        handle.write("\nmaintenance:\n" + maintenance)
    return conf


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, test_home: HomeLayout) -> Iterator[Cli]:
    root = tmp_path_factory.mktemp("maintain")
    # VACUUM next to the job keeps 10 minutes, longer than any micro-batch (files a batch wrote and has not
    # committed yet are unreferenced to VACUUM too): on a loaded 2-core CI machine one batch outlasted a
    # 1-minute retention while maintain ran, and VACUUM deleted a file that batch then committed
    conf = conf_with(root, "conf", "  compact_min_files: 2\n  vacuum_retention: 10 minutes\n"
                                   "  min_vacuum_retention: 10 minutes\n")
    with stack_cli(root, test_home.cache, conf) as runner:
        yield runner


def rows(cli: Cli, table: str) -> int:
    stats = delta_table_stats(str(cli.home / "lake" / "payments" / table))
    return stats.rows if stats else 0


def gold_count(cli: Cli) -> int:
    layout = HomeLayout(home=cli.home, cache=Path(cli.env["KAPPALAKE_CACHE"]))
    reader = clickhouse_connect.get_client(dsn=ClickHouseEndpoint(layout).dsn())
    if not reader.command(f"EXISTS TABLE {VIEW_TABLE}"):
        return 0
    return int(reader.command(f"SELECT sum(txn_count) FROM {VIEW_TABLE} FINAL") or 0)


def wait_until(what: str, check, job, log: Path, timeout: float = 300) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, f"the job ended (exit {job.returncode}):\n{log.read_text()[-3000:]}"
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout}s")


def plant_stray_file(table: Path, age_seconds: float) -> Path:
    """An unreferenced data file in a partition of ``table`` (what a batch abandoned long ago leaves),
    ``age_seconds`` old: VACUUM must delete it."""
    partition = next(p for p in table.iterdir() if p.is_dir() and not p.name.startswith("_"))
    stray = partition / "part-00000-00000000-0000-0000-0000-000000000000.c000.snappy.parquet"
    shutil.copyfile(next(partition.glob("*.parquet")), stray)
    old = time.time() - age_seconds
    os.utime(stray, (old, old))
    return stray


def maintained(cli: Cli, *args: str) -> dict[str, dict[str, str]]:
    done = cli("maintain", "payments", "--format", "json", *args)
    return {row["table"]: row for row in map(json.loads, done.stdout.splitlines())}


@pytest.mark.timeout(900)
def test_maintain_next_to_a_running_job_compacts_and_vacuums_and_loses_and_doubles_nothing(
        cli: Cli, tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    job = cli.start("run", "payments", "--trigger", "1 second", log=log)
    producer = None
    try:
        cli("produce", "payments", "--events", "10000", "--seed", "31")
        wait_until("bronze holds the first 10,000 rows", lambda: rows(cli, "bronze") >= 10000, job, log)
        stray = plant_stray_file(cli.home / "lake" / "payments" / "bronze", age_seconds=3600)
        # more events arrive while the pass runs: the job keeps writing next to the compaction and VACUUM
        producer = cli.start("produce", "payments", "--rate", "200", "--duration", "100", "--seed", "32",
                             log=tmp_path / "produce.log")
        report = maintained(cli)
        assert job.poll() is None, f"the job ended after maintain:\n{log.read_text()[-3000:]}"
        assert {"bronze", "silver", VIEW_TABLE, f"{VIEW_TABLE}_state"} <= set(report), report
        assert "small files into" in report["bronze"]["compaction"], report["bronze"]  # compacted under the job
        assert report["bronze"]["log retention"] == "ok"  # the job created its tables with it
        assert not stray.exists(), "VACUUM left an unreferenced file older than the retention"
        assert producer.wait(timeout=300) == 0, (tmp_path / "produce.log").read_text()[-2000:]
        wait_until("silver and gold hold every event",
                   lambda: rows(cli, "silver") >= 30000 and gold_count(cli) >= 30000, job, log)
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=240) == 143, log.read_text()[-3000:]
    finally:
        for process in (producer, job):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)

    bronze = DeltaTable(str(cli.home / "lake" / "payments" / "bronze"))
    operations = {entry["operation"] for entry in bronze.history()}
    assert {"STREAMING UPDATE", "OPTIMIZE"} <= operations, operations
    assert bronze.metadata().configuration.get("delta.logRetentionDuration") == "interval 604800 seconds"
    assert rows(cli, "bronze") == 30000 and rows(cli, "silver") == 30000
    silver_ids = DeltaTable(str(cli.home / "lake" / "payments" / "silver")).to_pyarrow_table(columns=["event_id"])
    assert len(silver_ids["event_id"].unique()) == 30000
    assert gold_count(cli) == 30000  # every event in exactly one window, after compaction and part merges
    assert rows(cli, "late_events") == 0


def test_vacuum_with_the_job_stopped_leaves_only_the_live_files(cli: Cli, tmp_path: Path) -> None:
    quick = Cli(cli.home, Path(cli.env["KAPPALAKE_CACHE"]), cli.cwd,
                conf=conf_with(tmp_path, "conf", "  vacuum_retention: 1 second\n  min_vacuum_retention: 1 second\n"))
    if rows(cli, "bronze") == 0:
        cli("produce", "payments", "--events", "5000", "--seed", "41")
        cli("run", "payments", "--layer", "bronze", "--available-now")
    time.sleep(2)

    report = maintained(quick, "--only", "delta")

    bronze = cli.home / "lake" / "payments" / "bronze"
    live = {Path(uri).name for uri in DeltaTable(str(bronze)).file_uris()}
    on_disk = {p.name for p in bronze.rglob("*.parquet") if "_delta_log" not in p.parts}
    assert on_disk == live, report["bronze"]


def test_a_vacuum_retention_below_the_safety_margin_is_refused_before_anything_runs(cli: Cli) -> None:
    refused = cli("maintain", "payments", "--vacuum-retention", "10 seconds", check=False)

    assert refused.returncode == 8, refused.stdout + refused.stderr
    assert "shorter than the safety margin maintenance.min_vacuum_retention (600 seconds)" in refused.stderr
    assert "Traceback" not in refused.stderr and "kappalake-maintain" not in refused.stdout


def test_a_pipeline_whose_retention_is_below_its_margin_does_not_load(cli: Cli, tmp_path: Path) -> None:
    bad = Cli(cli.home, Path(cli.env["KAPPALAKE_CACHE"]), cli.cwd,
              conf=conf_with(tmp_path, "conf", "  vacuum_retention: 1 hour\n"))

    refused = bad("maintain", "payments", check=False)

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "vacuum_retention (3600 seconds) is shorter than min_vacuum_retention (86400 seconds)" in refused.stderr
