"""decode_avro and parse_events on Avro records in the Confluent wire format and plain, decoded in the JVM
by Spark's from_avro with the pipeline's reader schema (bytes written by fastavro, the Avro library the
confluent-kafka serializers use)."""

from __future__ import annotations

import io
import json
import struct
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest

from kappalake.config.loader import load_pipeline
from kappalake.transforms.decode_avro import UNRESOLVED, AvroPlan, decode_avro
from kappalake.transforms.parse import parse_events

CONF = Path(__file__).resolve().parents[2] / "conf"
READER = json.loads((CONF / "schemas" / "payment.avsc").read_text())
V1 = {**READER, "fields": [f for f in READER["fields"] if f["name"] != "channel"]}
WIDE = {**READER, "fields": [*READER["fields"], {"name": "note", "type": "string"}]}  # a field the reader skips
EVENT = {"event_id": "e-1", "card_id": "card-1", "merchant_id": "m-1", "amount": Decimal("12.50"), "currency": "EUR",
         "country": "DE", "event_time": datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)}
PLAN = AvroPlan(reader=json.dumps(READER), writers={1: json.dumps(V1), 2: json.dumps(READER), 3: json.dumps(WIDE)},
                labels={1: "payments_avro-value v1", 2: "payments_avro-value v2", 3: "payments_avro-value v3"})


def avro(schema: dict, record: dict, schema_id: int | None) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return (b"\x00" + struct.pack(">I", schema_id) if schema_id is not None else b"") + out.getvalue()


CASES = {
    "v1": avro(V1, EVENT, 1),
    "v2": avro(READER, {**EVENT, "channel": "web"}, 2),
    "v3_extra_field": avro(WIDE, {**EVENT, "channel": "pos", "note": "x"}, 3),
    "unknown_id": avro(READER, {**EVENT, "channel": "web"}, 77),
    "json": json.dumps({"event_id": "e-1"}).encode(),
    "too_short": b"\x00\x00\x00",
    "truncated": avro(V1, EVENT, 1)[:-4],
    "negative_length": avro(V1, EVENT, 1)[:5] + b"\x01" + avro(V1, EVENT, 1)[6:],
    "tombstone": None,
}


@pytest.fixture(scope="module")
def decoded(spark) -> dict[str, object]:
    records = spark.createDataFrame([(i, value) for i, value in enumerate(CASES.values())],
                                    "offset long, value binary")
    rows = {r["offset"]: r for r in decode_avro(records, PLAN).collect()}
    return {name: rows[i] for i, name in enumerate(CASES)}


def test_every_version_is_read_with_the_reader_schema(decoded) -> None:
    assert decoded["v1"]["_raw"]["channel"] == "unknown"  # the reader's default for a field v1 lacks
    assert decoded["v2"]["_raw"]["channel"] == "web" and decoded["v3_extra_field"]["_raw"]["channel"] == "pos"
    for name in ("v1", "v2", "v3_extra_field"):
        row = decoded[name]
        assert row["_decode_error"] is None, (name, row["_decode_error"])
        assert row["_raw"]["amount"] == Decimal("12.50") and row["_raw"]["event_id"] == "e-1"
    assert [decoded[n]["_schema_id"] for n in ("v1", "v2", "v3_extra_field")] == [1, 2, 3]


@pytest.mark.parametrize(("case", "rule", "fragment"), [
    ("unknown_id", UNRESOLVED, "schema id 77 is not known to this query"),
    ("json", "magic_byte", "first byte 0x7B"),
    ("too_short", "magic_byte", "3 bytes"),
    ("truncated", "avro", "schema id 1 (payments_avro-value v1): payload does not decode"),
    ("negative_length", "avro", "corrupt or truncated Avro"),
])
def test_each_bad_record_has_its_rule(decoded, case: str, rule: str, fragment: str) -> None:
    error = decoded[case]["_decode_error"]
    assert error is not None and error["rule"] == rule, error
    assert fragment in error["message"], error["message"]


def test_a_tombstone_is_left_to_parse_events(decoded) -> None:
    assert decoded["tombstone"]["_decode_error"] is None and decoded["tombstone"]["_raw"] is None


def test_parse_events_types_and_checks_decoded_fields(spark) -> None:
    events = load_pipeline("payments_avro", CONF, "local", env={"KAPPALAKE_HOME": "/tmp/x"}).events
    arrival = datetime(2026, 12, 1, 10, 0, 1, tzinfo=timezone.utc)
    values = [CASES["v2"], avro(READER, {**EVENT, "channel": "web", "currency": "XYZ", "amount": Decimal("-1.00")}, 2),
              CASES["json"]]
    records = spark.createDataFrame([(b"k", v, "payments_avro", 0, i, arrival) for i, v in enumerate(values)],
                                    "key binary, value binary, topic string, partition int, offset long, "
                                    "kafka_timestamp timestamp")
    rows = {r["offset"]: r for r in parse_events(records, events, lambda df: decode_avro(df, PLAN)).collect()}
    assert rows[0]["_errors"] == [] and rows[0]["amount"] == Decimal("12.50") and rows[0]["channel"] == "web"
    assert sorted(e["rule"] for e in rows[1]["_errors"]) == ["allowed", "min"]
    assert [e["rule"] for e in rows[2]["_errors"]] == ["magic_byte"]


def test_plain_avro_reads_with_the_writer_schema_from_a_file(spark) -> None:
    plan = AvroPlan(reader=json.dumps(READER), wire="plain", plain_writer=json.dumps(V1))
    records = spark.createDataFrame([(0, avro(V1, EVENT, None)), (1, b"\x01garbage")], "offset long, value binary")
    rows = {r["offset"]: r for r in decode_avro(records, plan).collect()}
    assert rows[0]["_raw"]["channel"] == "unknown" and rows[0]["_decode_error"] is None
    assert rows[1]["_decode_error"]["rule"] == "avro" and rows[1]["_schema_id"] is None


def test_widened_and_removed_fields_resolve_with_the_reader_schema(spark) -> None:
    """An int written, a long read; a float written, a double read; an optional field the reader dropped."""
    writer = {"type": "record", "name": "Reading", "fields": [
        {"name": "id", "type": "string"}, {"name": "count", "type": "int"}, {"name": "level", "type": "float"},
        {"name": "comment", "type": ["null", "string"], "default": None}]}
    reader = {"type": "record", "name": "Reading", "fields": [
        {"name": "id", "type": "string"}, {"name": "count", "type": "long"}, {"name": "level", "type": "double"}]}
    plan = AvroPlan(reader=json.dumps(reader), writers={5: json.dumps(writer)})
    value = avro(writer, {"id": "r-1", "count": 2 ** 31 - 1, "level": 0.5, "comment": "gone"}, 5)
    row = decode_avro(spark.createDataFrame([(0, value)], "offset long, value binary"), plan).first()
    assert row["_decode_error"] is None
    assert row["_raw"].asDict() == {"id": "r-1", "count": 2 ** 31 - 1, "level": 0.5}


def test_a_header_with_the_high_bit_set_is_a_negative_id_not_an_overflow(spark) -> None:
    value = b"\x00\xff\xff\xff\xff" + b"\x02"
    row = decode_avro(spark.createDataFrame([(0, value)], "offset long, value binary"), PLAN).first()
    assert row["_schema_id"] == -1 and row["_decode_error"]["rule"] == UNRESOLVED


def test_ids_the_plan_rejects_are_dead_lettered_with_the_reason(spark) -> None:
    plan = AvroPlan(reader=PLAN.reader, writers=PLAN.writers, rejected={9: "schema id 9 (other-value v1) cannot be read"})
    value = avro(READER, {**EVENT, "channel": "web"}, 9)
    row = decode_avro(spark.createDataFrame([(0, value)], "offset long, value binary"), plan).first()
    assert row["_decode_error"]["rule"] == "incompatible_schema"
    assert row["_decode_error"]["message"] == "schema id 9 (other-value v1) cannot be read"


def test_mark_unknown_ids_leaves_known_ids_and_decode_errors_alone(spark) -> None:
    from kappalake.transforms.decode_avro import mark_unknown_ids

    frame = spark.createDataFrame([(0, 1, None), (1, 2, None), (2, 2, ("protobuf", None, "bad")), (3, None, None)],
                                  "offset long, _schema_id int, "
                                  "_decode_error struct<rule:string,field:string,message:string>")
    rows = {r["offset"]: r["_decode_error"] for r in mark_unknown_ids(frame, {1}).collect()}
    assert rows[0] is None and rows[3] is None and rows[2]["rule"] == "protobuf"
    assert rows[1]["rule"] == UNRESOLVED and rows[1]["message"] == "schema id 2 is not known to this query"
