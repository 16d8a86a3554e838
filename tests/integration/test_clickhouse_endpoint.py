"""The local ClickHouse endpoint: real chDB behind the HTTP server, reached with clickhouse-connect's HTTP client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import clickhouse_connect
import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from kappalake.errors import StackError
from kappalake.io.clickhouse.client import connect
from kappalake.io.clickhouse.schema import GoldTable, ensure_table
from kappalake.io.clickhouse.sink import GoldSink
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.clickhouse import ClickHouseEndpoint
from kappalake.runtime.stack.clickhouse_http import LOG_LEVEL_ENV, PASSWORD_ENV
from tests.unit.test_clickhouse_sink import BATCH0, SCHEMA, expected, view_rows

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseEndpoint]:
    home = tmp_path_factory.mktemp("ch-home")
    service = ClickHouseEndpoint(HomeLayout(home=home, cache=home / "cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(PASSWORD_ENV, raising=False)
        patch.setenv(LOG_LEVEL_ENV, "DEBUG")  # every request in the log: the compression test reads it
        service.up(timeout=60)
    yield service
    service.down()


@pytest.fixture
def client(endpoint: ClickHouseEndpoint) -> Client:
    return clickhouse_connect.get_client(dsn=endpoint.dsn())


def table_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def dedup_table(client: Client) -> str:
    name = table_name()
    client.command(f"CREATE TABLE {name} (k UInt32, v String, ts DateTime64(3, 'UTC'), version UInt64) "
                   "ENGINE = ReplacingMergeTree(version) ORDER BY k "
                   "SETTINGS non_replicated_deduplication_window = 100")
    client.command(f"SYSTEM STOP MERGES {name}")  # raw counts below tell inserted from deduplicated rows
    return name


def rows(keys: list[int], version: int) -> pa.Table:
    return pa.table({"k": pa.array(keys, pa.uint32()), "v": [f"v{k}" for k in keys],
                     "ts": pa.array([T0] * len(keys), pa.timestamp("ms", tz="UTC")),
                     "version": pa.array([version] * len(keys), pa.uint64())})


def count(client: Client, table: str) -> int:
    return int(client.command(f"SELECT count() FROM {table}"))


def test_status_and_dsn(endpoint: ClickHouseEndpoint) -> None:
    status = endpoint.status()
    assert status.state == "running" and status.server is not None
    assert endpoint.dsn() == f"http://127.0.0.1:{status.server.port}" == status.dsn
    state = json.loads(endpoint.state_file.read_text())
    assert set(state) == {"pid", "port", "started_at", "data_dir", "log_file"}
    assert state["data_dir"] == str(endpoint.layout.home / "clickhouse")
    assert endpoint.log_file == endpoint.layout.stack / "clickhouse.log"
    assert endpoint.up().server == status.server  # idempotent


def test_plain_http(endpoint: ClickHouseEndpoint) -> None:
    base = endpoint.dsn()
    assert urllib.request.urlopen(f"{base}/ping").read() == b"Ok.\n"
    with urllib.request.urlopen(f"{base}/?query=SELECT+1+AS+x&default_format=JSONEachRow") as response:
        assert response.read() == b'{"x":1}\n'
        assert response.headers["X-ClickHouse-Format"] == "JSONEachRow"
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(urllib.request.Request(f"{base}/", data=b"SELEC 1"))
    assert raised.value.headers["X-ClickHouse-Exception-Code"] == "62"
    assert raised.value.read().startswith(b"Code: 62. DB::Exception: ")


def test_command_query_and_native_insert(client: Client) -> None:
    name = table_name()
    client.command(f"CREATE TABLE {name} (k UInt32, v Nullable(String), ts DateTime64(3, 'UTC')) "
                   "ENGINE = MergeTree ORDER BY k")
    assert client.command(f"EXISTS TABLE {name}") == 1
    assert client.command("SELECT 1, 'a'") == ["1", "a"]
    client.insert(name, [[2, None, T0], [1, "a", T0]], column_names=["k", "v", "ts"])

    assert client.query(f"SELECT k, v FROM {name} ORDER BY k").result_rows == [(1, "a"), (2, None)]
    assert client.query("SELECT {n:UInt32} + 1 AS m", parameters={"n": 41}).result_rows == [(42,)]
    arrow = client.query_arrow(f"SELECT k, ts FROM {name} ORDER BY k")
    assert arrow.column("k").to_pylist() == [1, 2] and arrow.column("ts").to_pylist()[0] == T0
    frame = client.query_df(f"SELECT k, v FROM {name} ORDER BY k")
    assert frame["k"].tolist() == [1, 2]


def test_output_formats_and_form_encoded_queries(endpoint: ClickHouseEndpoint, client: Client) -> None:
    assert json.loads(client.raw_query("SELECT 1 AS x", fmt="JSON"))["data"] == [{"x": 1}]
    assert client.raw_query("SELECT 1 AS x, 'a' AS y", fmt="CSVWithNames") == b'"x","y"\n1,"a"\n'
    with client.query_arrow_stream("SELECT number FROM numbers(3)") as stream:
        assert [n for batch in stream for n in batch.column(0).to_pylist()] == [0, 1, 2]
    form = clickhouse_connect.get_client(dsn=endpoint.dsn(), form_encode_query_params=True)
    assert form.query("SELECT {s:String} AS s", parameters={"s": "x" * 5000}).result_rows == [("x" * 5000,)]


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip", False])
def test_compressed_inserts(endpoint: ClickHouseEndpoint, compress: str | bool) -> None:
    client = clickhouse_connect.get_client(dsn=endpoint.dsn(), compress=compress)
    name = dedup_table(client)
    client.insert(name, [[k, f"v{k}", T0, 1] for k in range(5000)], column_names=["k", "v", "ts", "version"])
    client.insert_arrow(name, rows([10_000, 10_001], 1))
    assert count(client, name) == 5002
    native = [line for line in endpoint.log_file.read_text().splitlines() if f"INSERT INTO `{name}`" in line]
    assert len(native) == 2 and (f"({compress})" in native[0]) is bool(compress)  # the body came compressed


def test_columns_named_like_keywords(client: Client) -> None:
    name = table_name()
    client.command(f"CREATE TABLE {name} (k UInt8, `format` String, `settings` String, `values` String) "
                   "ENGINE = MergeTree ORDER BY k")
    client.insert(name, [[1, "a", "b", "c"]], column_names=["k", "format", "settings", "values"],
                  settings={"insert_deduplicate": 1})
    client.insert_arrow(name, pa.table({"k": pa.array([2], pa.uint8()), "format": ["x"], "settings": ["y"],
                                        "values": ["z"]}))
    assert client.query(f"SELECT * FROM {name} ORDER BY k").result_rows == [(1, "a", "b", "c"), (2, "x", "y", "z")]


def test_insert_arrow_and_final(client: Client) -> None:
    name = dedup_table(client)
    client.insert_arrow(name, rows([1, 2, 3], 1))
    client.insert_arrow(name, rows([2], 2).set_column(1, "v", pa.array(["new"])))
    assert count(client, name) == 4
    assert client.query(f"SELECT k, v, version FROM {name} FINAL ORDER BY k").result_rows == [
        (1, "v1", 1), (2, "new", 2), (3, "v3", 1)]


def test_dedup_token_drops_a_repeated_insert(client: Client) -> None:
    name = dedup_table(client)
    for version in (1, 2):  # the same token with different content, as a replay with a newer version
        summary = client.insert_arrow(name, rows([1, 2], version), settings={"insert_deduplication_token": "a"})
        assert summary.query_id and (version == 2 or summary.written_rows == 2)
    assert count(client, name) == 2
    assert client.query(f"SELECT DISTINCT version FROM {name}").result_rows == [(1,)]

    client.insert_arrow(name, rows([1, 2], 3), settings={"insert_deduplication_token": "b"})
    assert count(client, name) == 4
    # The native insert path honours the token as well.
    for _ in range(2):
        client.insert(name, [[9, "x", T0, 4]], column_names=["k", "v", "ts", "version"],
                      settings={"insert_deduplication_token": "c"})
    assert count(client, name) == 5
    assert client.query(f"SELECT k, version FROM {name} FINAL ORDER BY k").result_rows == [(1, 3), (2, 3), (9, 4)]


def test_a_bad_query_raises_the_clickhouse_error(client: Client) -> None:
    missing = table_name()
    with pytest.raises(DatabaseError) as raised:
        client.query(f"SELECT * FROM {missing}")
    assert "Code: 60" in str(raised.value) and missing in str(raised.value) and "UNKNOWN_TABLE" in str(raised.value)
    assert raised.value.code == 60
    with pytest.raises(DatabaseError, match="SYNTAX_ERROR"):
        client.command("CREATE TABLE (")


def test_settings_apply_per_query_and_sessions_keep_set(endpoint: ClickHouseEndpoint, client: Client) -> None:
    assert client.command("SELECT getSetting('max_block_size')", settings={"max_block_size": 1234}) == 1234
    other = clickhouse_connect.get_client(dsn=endpoint.dsn())
    default = other.command("SELECT getSetting('max_block_size')")
    assert default != 1234
    client.command("SET max_block_size = 4321")  # a SET lives in the client's HTTP session, as on a server
    assert client.command("SELECT getSetting('max_block_size')") == 4321
    assert other.command("SELECT getSetting('max_block_size')") == default


def test_the_sink_writes_a_replayed_batch_exactly_once(endpoint: ClickHouseEndpoint) -> None:
    ch = connect(endpoint.dsn())
    table = GoldTable.from_schema(f"gold_ep_{uuid.uuid4().hex[:12]}", SCHEMA, ("card",))
    ensure_table(ch, table)
    ch.command(f"SYSTEM STOP MERGES `{table.name}`")
    sink = GoldSink(ch, table, chunk_rows=2)
    sink.bind("q1")

    sink.write(view_rows(BATCH0), 0)
    sink.write(view_rows(BATCH0), 0)  # the replay: the same tokens, a newer version

    assert ch.rows(f"SELECT count(), uniqExact(version) FROM `{table.name}`") == [(5, 1)]
    got = ch.query_arrow(f"SELECT card, window_start, window_end, n, total FROM `{table.name}` FINAL "
                         "ORDER BY card, window_start").to_pylist()
    assert got == expected(BATCH0)


CLIENT_SCRIPT = """
import sys, clickhouse_connect
client = clickhouse_connect.get_client(dsn=sys.argv[1])
table, role = sys.argv[2], sys.argv[3]
for i in range(40):
    if role == "insert":
        client.insert(table, [[1000 + i, "w", 0, 1]], column_names=["k", "v", "ts", "version"])
    else:
        assert client.command(f"SELECT count() >= 2 FROM {table}") == 1
print("ok")
"""


def test_clients_in_other_processes_read_while_one_inserts(endpoint: ClickHouseEndpoint, client: Client) -> None:
    name = dedup_table(client)
    client.insert_arrow(name, rows([1, 2], 1))
    processes = [subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, endpoint.dsn(), name, role],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for role in ("read", "read", "insert")]
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], results
    assert count(client, name) == 42


def test_a_password_is_required_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    service = ClickHouseEndpoint(HomeLayout(home=tmp_path, cache=tmp_path / "cache"))
    service.up(timeout=60)
    try:
        assert f"--port {service.status().server.port}" in " ".join(  # type: ignore[union-attr]
            Path(f"/proc/{service.status().server.pid}/cmdline").read_text().split("\0"))  # type: ignore[union-attr]
        assert "s3cret" not in Path(f"/proc/{service.status().server.pid}/cmdline").read_text()  # type: ignore[union-attr]
        with pytest.raises(DatabaseError) as raised:
            clickhouse_connect.get_client(dsn=service.dsn())
        assert raised.value.code == 516 and "AUTHENTICATION_FAILED" in str(raised.value)
        with pytest.raises(DatabaseError, match="516"):
            clickhouse_connect.get_client(dsn=service.dsn(), username="default", password="wrong")
        good = clickhouse_connect.get_client(dsn=service.dsn(), username="default", password="s3cret")
        assert good.command("SELECT 1") == 1
        base = service.dsn()
        headers = {"X-ClickHouse-User": "default", "X-ClickHouse-Key": "s3cret"}
        with urllib.request.urlopen(urllib.request.Request(f"{base}/?query=SELECT+2", headers=headers)) as response:
            assert response.read() == b"2\n"
        with urllib.request.urlopen(f"{base}/?query=SELECT+3&user=default&password=s3cret") as response:
            assert response.read() == b"3\n"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{base}/?query=SELECT+3")
        assert denied.value.code == 401 and denied.value.headers["X-ClickHouse-Exception-Code"] == "516"
    finally:
        service.down()


def test_up_fails_with_the_log_tail_when_the_directory_is_in_use(endpoint: ClickHouseEndpoint,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "clickhouse").symlink_to(endpoint.data_dir)  # another home on the same chDB directory
    second = ClickHouseEndpoint(HomeLayout(home=tmp_path, cache=tmp_path / "cache"))
    with pytest.raises(StackError, match="exited") as raised:
        second.up(timeout=30)
    assert "chDB allows one process per directory" in str(raised.value)
    assert second.status().state == "stopped"
    assert int(clickhouse_connect.get_client(dsn=endpoint.dsn()).command("SELECT 1")) == 1


# The lifecycle tests run last: they restart and kill the module's endpoint.

def test_down_then_up_keeps_the_data_and_the_port(endpoint: ClickHouseEndpoint, client: Client) -> None:
    name = dedup_table(client)
    client.insert_arrow(name, rows([1, 2, 3], 1))
    port = endpoint.status().server.port  # type: ignore[union-attr]

    assert endpoint.down() == "running"
    assert endpoint.status().state == "stopped"
    with pytest.raises(StackError, match="kappalake stack up"):
        endpoint.dsn()
    assert "stopped" in endpoint.log_file.read_text()  # SIGTERM: a clean shutdown, chDB closed

    assert endpoint.up().server.port == port  # type: ignore[union-attr]
    again = clickhouse_connect.get_client(dsn=endpoint.dsn())
    assert count(again, name) == 3


def test_a_killed_server_is_stale_and_up_replaces_it(endpoint: ClickHouseEndpoint) -> None:
    client = clickhouse_connect.get_client(dsn=endpoint.dsn())
    name = dedup_table(client)
    client.insert_arrow(name, rows([1], 1))
    pid = endpoint.status().server.pid  # type: ignore[union-attr]

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while endpoint.status().state != "stale" and time.monotonic() < deadline:
        time.sleep(0.1)

    assert endpoint.status().state == "stale"
    with pytest.raises(StackError, match="stale"):
        endpoint.dsn()
    assert endpoint.up().state == "running"
    assert endpoint.status().server.pid != pid  # type: ignore[union-attr]
    assert count(clickhouse_connect.get_client(dsn=endpoint.dsn()), name) == 1
