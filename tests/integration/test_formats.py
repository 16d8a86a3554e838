"""Avro and Protobuf topics end to end through the real CLI: the real broker, Spark (from_avro in the JVM),
Delta, the ClickHouse endpoint and the local Schema Registry endpoint, driven by confluent-kafka's own
serializers. Gold of the binary pipelines equals gold of the same events as JSON; two schema versions are
read with the reader schema; each bad-input kind lands in the dead-letter table with its reason."""

from __future__ import annotations

import collections
import io
import json
import shutil
import struct
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
import fastavro
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from deltalake import DeltaTable

from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import ClickHouseEndpoint, LocalStack, SchemaRegistryEndpoint
from tests.integration.cli_runner import REPO, Cli, stack_cli

EVENTS = 20000
SEED = ["--seed", "5", "--start-time", "2026-12-01T10:00:00"]
AVSC = json.loads((REPO / "conf" / "schemas" / "payment.avsc").read_text())
GOLD_COLUMNS = "card_id, window_start, txn_count, amount_sum, amount_max"


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, test_home: HomeLayout) -> Iterator[Cli]:
    with stack_cli(tmp_path_factory.mktemp("formats"), test_home.cache) as runner:
        yield runner


def layout(cli: Cli) -> HomeLayout:
    return HomeLayout(home=cli.home, cache=Path(cli.env["KAPPALAKE_CACHE"]))


def table(cli: Cli, pipeline: str, name: str) -> list[dict]:
    path = cli.home / "lake" / pipeline / name
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist() if (path / "_delta_log").exists() else []


def gold(cli: Cli, name: str) -> list[tuple]:
    reader = clickhouse_connect.get_client(dsn=ClickHouseEndpoint(layout(cli)).dsn())
    return sorted(tuple(row) for row in reader.query(f"SELECT {GOLD_COLUMNS} FROM {name} FINAL").result_rows)


def registry(cli: Cli) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": SchemaRegistryEndpoint(layout(cli)).url()})


def send(cli: Cli, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": LocalStack(layout(cli)).bootstrap_servers()})
    for value in values:
        producer.produce(topic, value=value, key=b"card-000001")
    assert producer.flush(30) == 0


def avro_bytes(schema: dict, record: dict, schema_id: int) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return b"\x00" + struct.pack(">I", schema_id) + out.getvalue()


@pytest.fixture(scope="module")
def json_gold(cli: Cli) -> list[tuple]:
    """Gold of the same 20,000 events as JSON (the reference the binary pipelines must equal)."""
    cli("produce", "payments", "--events", str(EVENTS), *SEED)
    cli("run", "payments", "--layer", "gold", "--available-now")
    rows = gold(cli, "payments_card_velocity_1m")
    assert sum(r[2] for r in rows) == EVENTS
    return rows


def test_avro_with_two_schema_versions_reads_both_with_the_reader_schema_and_equals_json(
        cli: Cli, json_gold: list[tuple]) -> None:
    cli("produce", "payments_avro", "--format", "avro", "--evolve", "--events", str(EVENTS), *SEED)

    cli("run", "payments_avro", "--available-now")

    versions = registry(cli).get_versions("payments_avro-value")
    assert versions == [1, 2]
    silver = table(cli, "payments_avro", "silver")
    assert len(silver) == EVENTS and len({r["event_id"] for r in silver}) == EVENTS
    channels = collections.Counter(r["channel"] for r in silver)
    assert channels["unknown"] == EVENTS // 2  # written with version 1: the reader schema's default
    assert set(channels) == {"unknown", "web", "pos", "app"}
    assert table(cli, "payments_avro", "dead_letter") == []
    assert gold(cli, "payments_avro_card_velocity_1m") == json_gold
    reader = clickhouse_connect.get_client(dsn=ClickHouseEndpoint(layout(cli)).dsn())
    by_channel = dict(reader.query("SELECT channel, sum(txn_count) FROM payments_avro_channel_1m FINAL "
                                   "GROUP BY channel").result_rows)
    assert by_channel == dict(channels)
    cached = sorted(p.name for p in (cli.home / "lake" / "_checkpoints" / "payments_avro" / "_schemas").glob("*.json"))
    assert cached == ["1.json", "2.json"], cached  # both writer schemas (by id), next to the checkpoints


def test_a_field_added_to_the_reader_schema_reaches_silver_without_a_manual_step(cli: Cli, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    evolved = {**AVSC, "fields": [*AVSC["fields"], {"name": "device", "type": "string", "default": "n/a"}]}
    (conf / "schemas" / "payment.avsc").write_text(json.dumps(evolved))
    evolved_cli = Cli(cli.home, Path(cli.env["KAPPALAKE_CACHE"]), cli.cwd, conf=conf)
    before = len(table(cli, "payments_avro", "silver"))

    evolved_cli("produce", "payments_avro", "--events", "1000", "--seed", "9")  # registers version 3
    evolved_cli("run", "payments_avro", "--layer", "silver", "--available-now")

    silver = table(cli, "payments_avro", "silver")
    assert len(silver) == before + 1000
    assert collections.Counter(r["device"] for r in silver) == {None: before, "n/a": 1000}
    assert registry(cli).get_versions("payments_avro-value") == [1, 2, 3]


def test_protobuf_pipeline_equals_json(cli: Cli, json_gold: list[tuple]) -> None:
    cli("produce", "payments_protobuf", "--format", "protobuf", "--events", str(EVENTS), *SEED)

    cli("run", "payments_protobuf", "--available-now")

    silver = table(cli, "payments_protobuf", "silver")
    assert len(silver) == EVENTS and table(cli, "payments_protobuf", "dead_letter") == []
    assert gold(cli, "payments_protobuf_card_velocity_1m") == json_gold
    assert registry(cli).get_versions("payments_protobuf-value") == [1]


def test_each_bad_avro_record_is_dead_lettered_with_its_reason_and_the_rest_goes_on(cli: Cli) -> None:
    client = registry(cli)
    known = client.get_version("payments_avro-value", 2).schema_id
    good = {"event_id": "bad-batch-good", "card_id": "card-000001", "merchant_id": "m-00001",
            "amount": Decimal("10.00"), "currency": "EUR", "country": "DE", "event_time": datetime.now(timezone.utc),
            "channel": "web"}
    valid = avro_bytes(AVSC, good, known)
    bad = {
        "json_bytes": (json.dumps({"event_id": "x"}).encode(), "magic_byte"),
        "too_short": (b"\x00\x00\x01", "magic_byte"),
        "unregistered_id": (avro_bytes(AVSC, good, 99999), "unknown_schema_id"),
        "truncated": (valid[:-12], "avro"),
        "corrupt": (valid[:5] + b"\x01" + valid[6:], "avro"),  # a string of length -1
    }
    before = len(table(cli, "payments_avro", "silver"))
    send(cli, "payments_avro", [value for value, _ in bad.values()] + [valid])

    cli("run", "payments_avro", "--layer", "silver", "--available-now")

    letters = table(cli, "payments_avro", "dead_letter")
    assert sorted(r["error_class"] for r in letters) == sorted(rule for _, rule in bad.values())
    by_value = {bytes(r["value"]): r for r in letters}
    for name, (value, rule) in bad.items():
        letter = by_value[value]
        assert letter["error_class"] == rule, (name, letter["error_message"])
    assert "schema id 99999 is not registered" in by_value[bad["unregistered_id"][0]]["error_message"]
    assert f"schema id {known} (payments_avro-value v2)" in by_value[bad["truncated"][0]]["error_message"]
    silver = table(cli, "payments_avro", "silver")
    assert len(silver) == before + 1 and [r["event_id"] for r in silver].count("bad-batch-good") == 1


def test_each_bad_protobuf_record_is_dead_lettered_with_its_reason(cli: Cli) -> None:
    known = registry(cli).get_version("payments_protobuf-value", 1).schema_id
    header = b"\x00" + struct.pack(">I", known)
    bad = {
        "json_bytes": (b'{"event_id": "x"}', "magic_byte"),
        "garbage": (header + b"\x00" + b"\xff\xff\xff\xff\xff\xff", "protobuf"),
        "other_message_index": (header + b"\x02\x06" + b"\x0a\x01x", "message_index"),
        "unregistered_id": (b"\x00" + struct.pack(">I", 99999) + b"\x00" + b"\x0a\x01x", "unknown_schema_id"),
    }
    send(cli, "payments_protobuf", [value for value, _ in bad.values()])

    cli("run", "payments_protobuf", "--layer", "silver", "--available-now")

    by_value = {bytes(r["value"]): r for r in table(cli, "payments_protobuf", "dead_letter")}
    for name, (value, rule) in bad.items():
        assert by_value[value]["error_class"] == rule, (name, by_value[value]["error_message"])
    assert by_value[bad["garbage"][0]]["error_message"].startswith(f"schema id {known}: ")


def test_an_incompatible_writer_schema_stops_the_job_naming_subject_version_and_field(cli: Cli) -> None:
    client = registry(cli)
    client.set_compatibility("payments_avro-value", "NONE")
    broken = {**AVSC, "fields": [f if f["name"] != "currency" else {"name": "currency", "type": "int"}
                                 for f in AVSC["fields"]]}
    client.register_schema("payments_avro-value", Schema(json.dumps(broken), "AVRO"))
    version = client.get_latest_version("payments_avro-value").version

    failed = cli("run", "payments_avro", "--layer", "silver", "--available-now", check=False)

    assert failed.returncode != 0
    assert f"payments_avro-value v{version}" in failed.stderr and "currency" in failed.stderr, failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr
