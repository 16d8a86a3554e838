"""The CDC stack (``stack up --with cdc``): PostgreSQL 15 + Kafka Connect with Debezium on the real broker.

Row changes in ``orders`` arrive on ``pg.public.orders`` as Debezium JSON envelopes; a restarted (or killed)
worker resumes from its offsets; the CLI starts, shows and stops both services.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from kappalake.errors import StackError
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import ConnectWorker, PostgresServer
from kappalake.runtime.stack.service import process_runs
from tests.integration import cdc_fixtures
from tests.integration.cdc_fixtures import CdcStack, Change, new_order_id
from tests.integration.cli_runner import Cli

cdc_stack, cdc = cdc_fixtures.cdc_stack, cdc_fixtures.cdc  # the shared session fixtures


def _insert(dsn: str, order_id: int, status: str = "new", amount: str = "12.50") -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("INSERT INTO orders (order_id, merchant_id, customer_id, status, amount) "
                           "VALUES (%s, 'm-1', 'c-1', %s, %s)", (order_id, status, amount))


def _ops(records: list[Change]) -> list[str | None]:
    return [record.op for record in records]


def test_insert_update_delete_arrive_as_debezium_envelopes(cdc: CdcStack) -> None:
    order_id = new_order_id()
    _insert(cdc.dsn, order_id)
    with psycopg.connect(cdc.dsn, autocommit=True) as connection:
        connection.execute("UPDATE orders SET status = 'paid', amount = 13.75 WHERE order_id = %s", (order_id,))
        connection.execute("DELETE FROM orders WHERE order_id = %s", (order_id,))

    records = cdc.order_changes(order_id, until=lambda seen: len(seen) >= 4)
    assert _ops(records) == ["c", "u", "d", None]  # one key, one partition: in commit order; tombstone last
    assert {r.partition for r in records} == {records[0].partition}
    assert all(r.key == {"order_id": order_id} for r in records)  # key converter without schemas
    created, updated, deleted, tombstone = records
    assert tombstone.value is None
    assert created.value is not None and "schema" in created.value  # value converter with schemas
    assert created.payload["before"] is None
    assert created.payload["after"]["amount"] == "12.50"  # decimal.handling.mode=string
    assert created.payload["after"]["status"] == "new"
    assert updated.payload["before"]["status"] == "new"  # REPLICA IDENTITY FULL
    assert updated.payload["after"]["status"] == "paid" and updated.payload["after"]["amount"] == "13.75"
    assert deleted.payload["before"]["status"] == "paid" and deleted.payload["after"] is None
    for record in (created, updated, deleted):
        source = record.payload["source"]
        assert isinstance(source["lsn"], int) and source["lsn"] > 0
        assert source["table"] == "orders" and source["schema"] == "public" and source["db"] == "kappalake"
    assert created.payload["source"]["lsn"] < updated.payload["source"]["lsn"] < deleted.payload["source"]["lsn"]


def test_merchants_are_captured_too(cdc: CdcStack) -> None:
    merchant_id = f"m-{new_order_id()}"
    with psycopg.connect(cdc.dsn, autocommit=True) as connection:
        connection.execute("INSERT INTO merchants (merchant_id, name, category, country, risk_tier) "
                           "VALUES (%s, 'Shop', 'retail', 'DE', 2)", (merchant_id,))
    records = cdc.changes("pg.public.merchants", lambda k: k.get("merchant_id") == merchant_id,
                          until=lambda seen: len(seen) >= 1)
    assert _ops(records) == ["c"] and records[0].payload["after"]["risk_tier"] == 2


def test_changes_made_while_connect_is_down_arrive_after_restart(cdc: CdcStack) -> None:
    before_restart = new_order_id()
    _insert(cdc.dsn, before_restart)
    cdc.order_changes(before_restart, until=lambda seen: len(seen) >= 1)

    running = cdc.connect.status().server
    assert running is not None
    assert cdc.connect.down() == "running"
    assert cdc.connect.status().state == "stopped"
    while_down = new_order_id()
    _insert(cdc.dsn, while_down, status="while-down")
    restarted = cdc.connect.up()
    assert restarted.state == "running" and restarted.server is not None
    assert restarted.server.pid != running.pid and restarted.server.port == running.port
    records = cdc.order_changes(while_down, until=lambda seen: len(seen) >= 1)
    assert _ops(records) == ["c"] and records[0].payload["after"]["status"] == "while-down"

    # restart(): stop then up, keeping the offsets
    first = cdc.connect.status().server
    assert first is not None
    after = cdc.connect.restart()
    assert after.server is not None and after.server.pid != first.pid and after.server.port == first.port
    again = new_order_id()
    _insert(cdc.dsn, again)
    assert _ops(cdc.order_changes(again, until=lambda seen: len(seen) >= 1)) == ["c"]


def test_killed_connect_is_stale_and_resumes_after_up(cdc: CdcStack) -> None:
    cdc.connect.kill()
    assert cdc.connect.status().state == "stale"
    with pytest.raises(StackError, match="not running"):
        cdc.connect.url()
    order_id = new_order_id()
    _insert(cdc.dsn, order_id, status="after-kill")
    assert cdc.connect.up().state == "running"
    records = cdc.order_changes(order_id, until=lambda seen: len(seen) >= 1)
    assert {r.op for r in records} == {"c"}  # at least once: a replay after SIGKILL may repeat it


def test_cli_status_shows_postgres_and_kafka_connect(cdc: CdcStack, tmp_path) -> None:
    cli = Cli(cdc.layout.home, cdc.layout.cache, tmp_path)
    done = cli("stack", "status", "--format", "json", check=False)
    rows = {row["service"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert rows["postgres"]["state"] == "running" and rows["postgres"]["address"] == cdc.dsn
    assert rows["kafka-connect"]["state"] == "running" and rows["kafka-connect"]["address"] == cdc.connect_url
    assert rows["kafka-connect"]["pid"] == str(cdc.connect.status().server.pid)


def test_postgres_up_is_idempotent_and_detects_stale_state(tmp_path, test_home: HomeLayout) -> None:
    server = PostgresServer(HomeLayout(home=tmp_path / "home", cache=test_home.cache))
    try:
        first = server.up()
        assert first.state == "running" and first.server is not None
        assert first.server.dsn == f"postgresql://kappalake@127.0.0.1:{first.server.port}/kappalake"
        assert server.up().server == first.server  # no second server
        with psycopg.connect(first.server.dsn) as connection:
            assert connection.execute("SHOW wal_level").fetchone() == ("logical",)
            tables = {row[0]: row[1] for row in connection.execute(
                "SELECT relname, relreplident FROM pg_class WHERE relname IN ('orders', 'merchants')")}
            assert tables == {"orders": "f", "merchants": "f"}  # REPLICA IDENTITY FULL
            role = connection.execute("SELECT rolreplication, rolsuper FROM pg_roles WHERE rolname = 'kappalake'")
            assert role.fetchone() == (True, True)
        server.kill()
        assert server.status().state == "stale"
        second = server.up()
        assert second.state == "running" and second.server is not None
        assert second.server.pid != first.server.pid and second.server.port == first.server.port
    finally:
        assert server.down() in ("running", "stale", "stopped")
        assert server.status().state == "stopped"
        server.purge()
    assert not server.cluster_dir.exists()


def test_cli_up_with_cdc_status_and_down(tmp_path, test_home: HomeLayout) -> None:
    cli = Cli(tmp_path / "home", test_home.cache, tmp_path)
    try:
        up = cli("stack", "up", "--with", "cdc")
        assert "PostgreSQL started: postgresql://kappalake@127.0.0.1:" in up.stdout
        assert "Kafka Connect started: http://127.0.0.1:" in up.stdout and "pg.public.orders" in up.stdout
        status = cli("stack", "status", "--format", "json")
        rows = {row["service"]: row for row in map(json.loads, status.stdout.splitlines())}
        assert rows["postgres"]["state"] == rows["kafka-connect"]["state"] == "running"
        pids = [int(rows[name]["pid"]) for name in ("postgres", "kafka-connect")]
    finally:
        down = cli("stack", "down", check=False)
    assert "Kafka Connect stopped" in down.stdout and "PostgreSQL stopped" in down.stdout
    assert down.stdout.index("Kafka Connect stopped") < down.stdout.index("PostgreSQL stopped") \
        < down.stdout.index("Kafka broker stopped")
    assert not any(process_runs(pid, "") for pid in pids)  # gone (or a zombie awaiting its reaper)
    layout = HomeLayout(home=tmp_path / "home", cache=test_home.cache)
    assert PostgresServer(layout).status().state == ConnectWorker(layout).status().state == "stopped"
    PostgresServer(layout).purge()
