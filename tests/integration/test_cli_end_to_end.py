"""The README path through the real CLI processes: stack up, produce, run bronze, status, stack down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from kappalake import versions
from kappalake.runtime.paths import HomeLayout

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.compat
def test_cli_stack_produce_run_status(tmp_path: Path, test_home: HomeLayout) -> None:
    env = {**os.environ, "KAPPALAKE_PII_KEY": "e2e-key", "KAPPALAKE_HOME": str(tmp_path / "home"), "KAPPALAKE_CACHE": str(test_home.cache),
           "KAPPALAKE_CONF": str(REPO / "conf"), "COLUMNS": "200"}

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "kappalake.cli.app", *args], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=600)
        if check:
            assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
        return result

    try:
        up = cli("stack", "up")
        assert "Kafka broker started" in up.stdout and "payments (3 partitions)" in up.stdout
        assert "ClickHouse endpoint started: http://127.0.0.1:" in up.stdout
        assert "already running" in cli("stack", "up").stdout

        produced = cli("produce", "payments", "--events", "2000", "--seed", "3", "--malformed-fraction", "0.1",
                       "--duplicate-fraction", "0.1")
        assert "2000" in produced.stdout

        ran = cli("run", "payments", "--layer", "bronze,silver", "--available-now")
        assert "payments.bronze" in ran.stdout and "payments.silver" in ran.stdout and "2000" in ran.stdout
        table = DeltaTable(str(tmp_path / "home" / "lake" / "payments" / "bronze"))
        assert table.to_pyarrow_table().num_rows == 2000

        status = cli("status", "payments")
        assert "running" in status.stdout
        line = versions.selected_line()
        # not a terminal: plain aligned columns, nothing cut (component, pinned, last run)
        cells = [re.split(r"\s{2,}", ln.strip()) for ln in status.stdout.splitlines()]
        loaded = {row[0]: row[2] for row in cells if len(row) == 3}
        assert loaded["Spark"] == line.spark and loaded["Delta Lake"] == line.delta, loaded  # as loaded
        assert loaded["kafka-clients (Spark side)"] == line.kafka_clients, loaded
        assert "2000" in status.stdout
        dead = DeltaTable(str(tmp_path / "home" / "lake" / "payments" / "dead_letter")).to_pyarrow_table().num_rows
        assert dead > 0 and f"{dead} records in the dead-letter table" in status.stdout
        listed = cli("dlq", "payments", "list", "--limit", "3")
        assert "3 shown" in listed.stdout
        dry = cli("dlq", "payments", "replay", "--dry-run")
        assert f"{dead} dead letters would be replayed" in dry.stdout
    finally:
        cli("stack", "down", check=False)
    stopped = cli("stack", "status", check=False)
    assert stopped.returncode == 1 and "stopped" in stopped.stdout


def test_unreachable_broker_fails_with_a_clear_message(tmp_path: Path, test_home: HomeLayout) -> None:
    conf = tmp_path / "conf"
    (conf / "pipelines").mkdir(parents=True)
    pipeline = yaml.safe_load((REPO / "conf" / "pipelines" / "payments.yml").read_text())
    pipeline.pop("targets", None)  # this project defines only the local target
    (conf / "pipelines" / "payments.yml").write_text(yaml.safe_dump(pipeline))
    (conf / "kappalake.yml").write_text(
        "targets:\n  local:\n    kafka: {bootstrap_servers: '127.0.0.1:1'}\n    storage: {root: "
        f"'{tmp_path}/lake'}}\n    clickhouse: {{dsn: 'chdb://{tmp_path}/ch'}}\n    spark: {{master: 'local[1]', "
        "jars: resolve}\n")
    result = subprocess.run([sys.executable, "-m", "kappalake.cli.app", "--conf", str(conf), "run", "payments",
                             "--layer", "bronze", "--available-now"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "KAPPALAKE_HOME": str(tmp_path / "home"),
                                 "KAPPALAKE_CACHE": str(test_home.cache), "COLUMNS": "200"})
    assert result.returncode == 5
    assert "Kafka at 127.0.0.1:1 did not answer" in result.stderr
    assert "Traceback" not in result.stderr
