"""``kappalake produce cdc`` on a real PostgreSQL: the rows match the summary, the mid-run ALTER, a resumed run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from kappalake.errors import CdcSourceError, StackError
from kappalake.generator.cdc_workload import CHANNELS, KINDS, MERCHANTS, CdcWorkload
from tests.integration import pg_fixture

REPO = Path(__file__).resolve().parents[2]
pg_server, cdc_dsn = pg_fixture.pg_server, pg_fixture.cdc_dsn  # the fixtures


def _rows(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def test_changes_match_the_summary_and_a_second_run_continues(cdc_dsn: str) -> None:
    first = CdcWorkload(cdc_dsn, seed=7, rate=0, changes=3000).run()
    assert first.changes == 3000 and first.skipped == 0 and not first.interrupted
    assert set(first.by_kind) == set(KINDS) and sum(first.by_kind.values()) == 3000
    assert first.schema_changes == 1 and first.merchants_seeded == MERCHANTS and first.multi_row_transactions > 0
    assert first.multi_row_transactions < first.transactions < 3000
    orders = _rows(cdc_dsn, "SELECT count(*), max(order_id) FROM orders")[0]
    assert orders[0] == first.by_op["insert"] - first.by_op["delete"]
    assert orders[1] == first.next_order_id - 1 and first.first_order_id == 1
    # the channel column exists; orders inserted or updated after the ALTER carry a channel
    channels = {r[0] for r in _rows(cdc_dsn, "SELECT DISTINCT channel FROM orders")}
    assert set(CHANNELS) <= channels and None in channels
    merchants = _rows(cdc_dsn, "SELECT min(merchant_id), max(merchant_id), count(*), min(risk_tier), "
                               "max(risk_tier), count(DISTINCT category) FROM merchants")[0]
    assert merchants == ("m-00000", "m-00299", MERCHANTS, 1, 5, 6)
    assert _rows(cdc_dsn, "SELECT count(*) FROM merchants WHERE updated_at > "
                          "(SELECT min(updated_at) FROM merchants)")[0][0] > 0  # dimension changes happened
    assert _rows(cdc_dsn, "SELECT count(*) FROM orders WHERE status NOT IN "
                          "('created', 'paid', 'shipped', 'delivered', 'cancelled')")[0][0] == 0

    second = CdcWorkload(cdc_dsn, seed=7, rate=0, changes=1000).run()
    assert second.merchants_seeded == 0 and second.first_order_id == first.next_order_id
    assert second.changes == 1000 and second.skipped == 0 and second.schema_changes == 1
    count, top = _rows(cdc_dsn, "SELECT count(*), max(order_id) FROM orders")[0]
    assert count == orders[0] + second.by_op["insert"] - second.by_op["delete"]
    assert top == second.next_order_id - 1 > first.next_order_id
    # a resumed run's new orders carry a channel from the start (the column exists)
    assert _rows(cdc_dsn, f"SELECT count(*) FROM orders WHERE order_id >= {second.first_order_id} "
                          "AND channel IS NULL")[0][0] == 0


def test_rate_is_paced(cdc_dsn: str) -> None:
    summary = CdcWorkload(cdc_dsn, seed=1, rate=200, changes=300).run()
    assert summary.changes == 300 and 1.2 < summary.seconds < 3.0, summary.seconds


def test_unreachable_postgres_names_the_dsn_without_password() -> None:
    with pytest.raises(CdcSourceError) as info:
        CdcWorkload("postgresql://kappalake:s3cret@127.0.0.1:1/kappalake", changes=1).run()
    message = str(info.value)
    assert "127.0.0.1:1" in message and "s3cret" not in message and "kappalake:***@" in message


def test_missing_schema_says_how_to_create_it(pg_server) -> None:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE cdc_empty")
    with pytest.raises(CdcSourceError, match="kappalake stack up --with cdc"):
        CdcWorkload(pg_fixture.database_dsn(pg_server, "cdc_empty"), changes=1).run()


def _cli(*args: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kappalake.cli.app", "produce", "cdc", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200", **kwargs})


def test_cli_runs_and_sigint_stops_between_transactions(cdc_dsn: str, tmp_path: Path) -> None:
    done = _cli("--dsn", cdc_dsn, "--rate", "0", "--changes", "500", "--seed", "3")
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert "total" in out and "500" in out and "merchants seeded" in out
    before = _rows(cdc_dsn, "SELECT count(*) FROM orders")[0][0]
    slow = _cli("--dsn", cdc_dsn, "--rate", "50", "--changes", "100000")
    time.sleep(4)
    slow.send_signal(signal.SIGINT)
    out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err
    assert "(interrupted)" in out and "Traceback" not in err
    counts = re.search(r"(\d+) inserts, (\d+) updates, (\d+) deletes", out)
    assert counts is not None, out
    changed = sum(int(n) for n in counts.groups())
    assert 0 < changed < 1000
    assert _rows(cdc_dsn, "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'")[0][0] == 0
    assert _rows(cdc_dsn, "SELECT count(*) FROM orders")[0][0] >= before


def test_cli_without_the_local_postgres_says_how_to_start_it(tmp_path: Path) -> None:
    result = _cli("--changes", "1", KAPPALAKE_HOME=str(tmp_path))
    out, err = result.communicate(timeout=120)
    assert result.returncode == StackError.exit_code, err
    assert "the local Postgres is not running: kappalake stack up --with cdc" in err and "Traceback" not in err


def test_cli_defaults_to_the_local_stack_postgres(pg_server) -> None:
    result = _cli("--changes", "200", "--rate", "0", KAPPALAKE_HOME=str(pg_server.layout.home))
    out, err = result.communicate(timeout=120)
    assert result.returncode == 0, err
    assert pg_server.dsn() in out.replace("\n", "")
    counts = re.search(r"(\d+) inserts, (\d+) updates, (\d+) deletes", out)
    assert counts is not None and sum(int(n) for n in counts.groups()) == 200
    assert _rows(pg_server.dsn(), "SELECT count(*) FROM merchants")[0][0] == MERCHANTS
