"""Debezium envelopes (JSON converter, with and without schemas) through decode_debezium + parse_events.

Every case is one record of one DataFrame, parsed once per module and looked up by its Kafka offset.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import Row

from kappalake.config import load_pipeline
from kappalake.transforms.decode_debezium import added_columns, decode_debezium
from kappalake.transforms.parse import field_column, parse_events

CONF = Path(__file__).resolve().parents[2] / "conf"
ORDERS = load_pipeline("orders", CONF, "local").events
RECORD_SCHEMA = "key binary, value binary, topic string, partition int, offset long, kafka_timestamp timestamp"
ARRIVAL = datetime(2026, 12, 1, 12, 0, 5, tzinfo=timezone.utc)
COMMIT_MS = 1_764_590_400_000  # 2025-12-01T12:00:00Z
ROW = {"order_id": 7, "merchant_id": "m-00001", "customer_id": "c-1", "status": "paid", "amount": "12.50",
       "created_at": "2026-12-01T11:59:00.000000Z", "updated_at": "2026-12-01T12:00:00.000000Z"}
AFTER_SCHEMA = {"type": "struct", "field": "after", "optional": True, "fields": [
    {"type": "int64", "optional": False, "field": "order_id"},
    {"type": "string", "optional": True, "field": "status"},
    {"type": "int32", "optional": True, "field": "priority"},
    {"type": "int64", "optional": True, "field": "shipped_at", "name": "io.debezium.time.MicroTimestamp"}]}


def envelope(op: str, before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
             lsn: int | None = 1000, schemas: bool = False, **extra: Any) -> bytes:
    source = {"lsn": lsn, "txId": 55, "ts_ms": COMMIT_MS, "db": "kappalake", "table": "orders"}
    body = {"before": before, "after": after, "source": source, "op": op, "ts_ms": COMMIT_MS + 20, **extra}
    if schemas:
        body = {"schema": {"type": "struct", "fields": [AFTER_SCHEMA]}, "payload": body}
    return json.dumps(body).encode()


KEY = json.dumps({"order_id": 7}).encode()
CASES: dict[str, tuple[bytes | None, bytes | None]] = {
    "insert": (KEY, envelope("c", after=ROW)),
    "insert_with_schema": (KEY, envelope("c", after=ROW, lsn=1001, schemas=True)),
    "update": (KEY, envelope("u", before=ROW, after={**ROW, "status": "shipped"}, lsn=1002)),
    "delete": (KEY, envelope("d", before={**ROW, "status": "shipped"}, lsn=1003)),
    "snapshot": (KEY, envelope("r", after=ROW, lsn=900)),
    "tombstone": (KEY, None),
    "tombstone_schema_key": (json.dumps({"schema": {"type": "struct"}, "payload": {"order_id": 8}}).encode(), None),
    "tombstone_no_key": (None, None),
    "unknown_op": (KEY, envelope("x", after=ROW)),
    "no_op": (KEY, json.dumps({"after": ROW}).encode()),
    "no_after": (KEY, envelope("c")),
    "no_lsn": (KEY, envelope("u", after=ROW, lsn=None)),
    "garbage": (KEY, b"not json"),
    "concatenated": (KEY, envelope("c", after=ROW) + envelope("c", after=ROW)),
    "bad_status": (KEY, envelope("c", after={**ROW, "status": "lost"}, lsn=1004)),
    "no_key_column": (KEY, envelope("c", after={k: v for k, v in ROW.items() if k != "order_id"}, lsn=1005)),
}
OFFSETS = {name: i for i, name in enumerate(CASES)}


@pytest.fixture(scope="module")
def parsed(spark) -> dict[str, Row]:
    rows = [(key, value, "pg.public.orders", 0, OFFSETS[name], ARRIVAL) for name, (key, value) in CASES.items()]
    records = spark.createDataFrame(rows, RECORD_SCHEMA)
    out = parse_events(records, ORDERS, lambda r: decode_debezium(r, ORDERS, tombstones=True))
    return {row["offset"]: row for row in out.collect()}


def case(parsed: dict[str, Row], name: str) -> Row:
    return parsed[OFFSETS[name]]


def value(row: Row, field: str) -> Any:
    return row[field_column(field)]


def rules(row: Row) -> list[tuple[str, str | None]]:
    return [(e["rule"], e["field"]) for e in row["_errors"]]


def test_an_insert_gives_the_after_image_and_the_change_metadata(parsed) -> None:
    row = case(parsed, "insert")
    assert row["_errors"] == []
    assert (value(row, "order_id"), value(row, "status"), value(row, "amount")) == (7, "paid", Decimal("12.50"))
    assert value(row, "cdc_op") == "c" and value(row, "cdc_lsn") == 1000 and value(row, "cdc_tx_id") == 55
    assert value(row, "cdc_ts") == datetime.fromtimestamp(COMMIT_MS / 1000, timezone.utc).replace(tzinfo=None)
    assert value(row, "cdc_id") == '1000/{"order_id": 7}'
    assert value(row, "created_at") == datetime(2026, 12, 1, 11, 59)


def test_an_envelope_with_schemas_reads_like_one_without(parsed) -> None:
    row = case(parsed, "insert_with_schema")
    assert row["_errors"] == [] and value(row, "status") == "paid" and value(row, "cdc_lsn") == 1001


def test_updates_take_the_after_image_and_deletes_the_before_image(parsed) -> None:
    assert value(case(parsed, "update"), "status") == "shipped"
    delete = case(parsed, "delete")
    assert delete["_errors"] == [] and value(delete, "cdc_op") == "d" and value(delete, "status") == "shipped"
    assert value(case(parsed, "snapshot"), "cdc_op") == "r"


def test_a_tombstone_is_a_change_with_the_key_of_the_record_key(parsed) -> None:
    row = case(parsed, "tombstone")
    assert row["_errors"] == [] and value(row, "cdc_op") == "t" and value(row, "order_id") == 7
    assert value(row, "cdc_lsn") is None and value(row, "status") is None
    assert value(case(parsed, "tombstone_schema_key"), "order_id") == 8


@pytest.mark.parametrize("name, rule, field, text", [
    ("tombstone_no_key", "envelope", None, "tombstone without a JSON key"),
    ("unknown_op", "envelope", "cdc_op", "unknown op 'x'"),
    ("no_op", "envelope", None, "no 'op'"),
    ("no_after", "envelope", None, "'after' is null"),
    ("no_lsn", "envelope", "cdc_lsn", "without source.lsn"),
    ("garbage", "json", None, "not a JSON object"),
    ("concatenated", "json", None, "not a JSON object"),
    ("bad_status", "allowed", "status", "status"),
    ("no_key_column", "required", "order_id", "order_id"),
])
def test_bad_envelopes_are_rejected_with_a_reason(parsed, name: str, rule: str, field: str | None,
                                                   text: str) -> None:
    errors = case(parsed, name)["_errors"]
    assert errors, name
    assert (errors[0]["rule"], errors[0]["field"]) == (rule, field), errors
    assert text in errors[0]["message"]


def test_without_tombstones_a_null_value_stays_a_record_without_value(spark) -> None:
    records = spark.createDataFrame([(KEY, None, "t", 0, 0, ARRIVAL)], RECORD_SCHEMA)
    row = parse_events(records, ORDERS, lambda r: decode_debezium(r, ORDERS, tombstones=False)).collect()[0]
    assert rules(row) == [("empty", None)]


def test_added_columns_are_typed_from_the_connect_schema_and_text_without_one(spark) -> None:
    new = {**ROW, "priority": 3, "shipped_at": 1_764_590_400_000_123, "channel": "web"}
    rows = spark.createDataFrame([
        (envelope("c", after=new, schemas=True).decode(), 1),
        (envelope("u", after={**ROW, "channel": "app"}).decode(), 2),
        (envelope("d", before=ROW).decode(), 3),
    ], "_dq_value string, order_id long")
    out = added_columns(rows, ORDERS.schema_)
    types = dict(out.dtypes)
    assert (types["priority"], types["shipped_at"], types["channel"]) == ("int", "timestamp", "string")
    got = {r["order_id"]: (r["priority"], r["channel"]) for r in out.collect()}
    assert got == {1: (3, "web"), 2: (None, "app"), 3: (None, None)}
    assert out.where("order_id = 1").collect()[0]["shipped_at"] == datetime(2025, 12, 1, 12, 0, 0, 123)


def test_no_added_columns_leaves_the_rows_alone(spark) -> None:
    rows = spark.createDataFrame([(envelope("c", after=ROW).decode(), 1)], "_dq_value string, order_id long")
    assert added_columns(rows, ORDERS.schema_).columns == rows.columns
