"""decode_protobuf on real Spark: Confluent-framed records from confluent_kafka's own ProtobufSerializer (its
in-memory mock registry, only to produce bytes), plain records, and every kind of bad record."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from chispa import assert_df_equality
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from pyspark.sql import DataFrame, Row

from kappalake.formats.protobuf_schema import load_message
from kappalake.transforms.decode_protobuf import decode_protobuf
from tests.unit.test_protobuf_schema import PAYMENT, PAYMENT_DESC, shop_descriptor_set

DESC = PAYMENT_DESC.read_bytes()
SHOP = shop_descriptor_set()
FIELDS = ["event_id", "card_id", "merchant_id", "amount", "currency", "country", "event_time"]
RECORD_SCHEMA = "key binary, value binary, topic string, partition int, offset long, kafka_timestamp timestamp"
ARRIVAL = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
NOT_PAYMENT = "payload does not parse as kappalake.payments.Payment: "


def serialize(descriptor_set: bytes, message: str, topic: str, **values: object) -> tuple[bytes, int]:
    """One record as the Confluent serializer frames it, and the schema id it registered."""
    client = SchemaRegistryClient.new_client({"url": "mock://kappalake-unit"})
    cls = load_message(descriptor_set, message).message_class
    seconds = values.pop("event_seconds", None)
    record = cls(**values)
    if seconds is not None:
        record.event_time.seconds, record.event_time.nanos = seconds, 123_456_789
    data = ProtobufSerializer(cls, client)(record, SerializationContext(topic, MessageField.VALUE))
    return data, client.get_latest_version(f"{topic}-value").schema_id


GOOD, SCHEMA_ID = serialize(DESC, PAYMENT, "payments", event_id="evt-1", card_id="card-1", merchant_id="",
                            amount="12.50", currency="EUR", country="DE", event_seconds=1_700_000_000)
NO_TIME, _ = serialize(DESC, PAYMENT, "payments", event_id="evt-2", amount="0.01")
REFUND, REFUND_ID = serialize(SHOP, "kappalake.test.Refund", "refunds", refund_id="r-1", cents=5)
GARBAGE = random.Random(7).randbytes(48)

CASES: dict[str, bytes | None] = {
    "good": GOOD,
    "no_time": NO_TIME,
    "json": b'{"event_id": "evt-3"}',
    "wrong_magic": b"\x01" + GOOD[1:],
    "too_short": GOOD[:3],
    "truncated": GOOD[:-4],
    "garbage": GARBAGE,
    "framed_garbage": GOOD[:6] + b"\xff" * 12,
    "wire_type_conflict": GOOD[:6] + b"\x08\x05" + GOOD[6:],  # field 1 (a string) sent as a varint
    "bad_index_array": GOOD[:5] + b"\x04\x02",  # two indexes announced, one there
    "refund": REFUND,
    "tombstone": None,
    "good_again": GOOD,
}


def local(seconds: int, micros: int) -> datetime:
    """A timestamp as ``collect`` returns it: naive, in the Python process's local time zone."""
    return datetime.fromtimestamp(seconds).replace(microsecond=micros)


def records(spark, values: list[bytes | None]) -> DataFrame:
    return spark.createDataFrame(
        [(f"k-{i}".encode(), value, "payments", i % 3, i, ARRIVAL) for i, value in enumerate(values)], RECORD_SCHEMA)


def decode_cases(spark, cases: dict[str, bytes | None], **kwargs: object) -> dict[str, Row]:
    options = {"descriptor_set": DESC, "message": PAYMENT, "fields": FIELDS, "wire": "confluent", **kwargs}
    rows = decode_protobuf(records(spark, list(cases.values())), **options).collect()
    by_offset = {row["offset"]: row for row in rows}
    return {name: by_offset[i] for i, name in enumerate(cases)}


@pytest.fixture(scope="module")
def confluent(spark) -> dict[str, Row]:
    return decode_cases(spark, CASES)


def test_confluent_records_decode_to_typed_values(confluent) -> None:
    row = confluent["good"]
    assert row["_decode_error"] is None and row["_schema_id"] == SCHEMA_ID
    assert row["_raw"].asDict() == {
        "event_id": "evt-1", "card_id": "card-1", "merchant_id": None, "amount": "12.50", "currency": "EUR",
        "country": "DE", "event_time": local(1_700_000_000, 123456)}
    assert Decimal(row["_raw"]["amount"]) == Decimal("12.50")
    assert confluent["good_again"]["_raw"] == row["_raw"]


def test_unset_strings_and_timestamps_are_null(confluent) -> None:
    raw = confluent["no_time"]["_raw"]
    assert (raw["event_id"], raw["amount"], raw["card_id"], raw["event_time"]) == ("evt-2", "0.01", None, None)


@pytest.mark.parametrize(("case", "rule", "message"), [
    ("json", "magic_byte", "payload does not start with the Confluent magic byte 0 (got 0x7b)"),
    ("wrong_magic", "magic_byte", "payload does not start with the Confluent magic byte 0 (got 0x01)"),
    ("too_short", "magic_byte", "payload of 3 bytes is too short for the Confluent header (5 bytes)"),
    ("truncated", "protobuf", NOT_PAYMENT),
    ("framed_garbage", "protobuf", NOT_PAYMENT),
    ("wire_type_conflict", "protobuf", NOT_PAYMENT + "field number 1 has the wrong wire type 0"),
    ("bad_index_array", "message_index", "the message-index array is truncated"),
    ("refund", "message_index", "message index [1] names no message in the configured descriptor set, "
                                "not kappalake.payments.Payment (index [0])"),
])
def test_each_bad_record_gets_its_rule_and_keeps_its_row(confluent, case: str, rule: str, message: str) -> None:
    row = confluent[case]
    assert row["_raw"] is None
    assert (row["_decode_error"]["rule"], row["_decode_error"]["field"]) == (rule, None)
    assert row["_decode_error"]["message"].startswith(message), row["_decode_error"]["message"]
    has_id = rule != "magic_byte"
    assert row["_schema_id"] == ({"refund": REFUND_ID}.get(case, SCHEMA_ID) if has_id else None)


def test_random_garbage_is_a_decode_error(confluent) -> None:
    error = confluent["garbage"]["_decode_error"]
    assert confluent["garbage"]["_raw"] is None and error["rule"] in ("magic_byte", "message_index", "protobuf")


def test_null_value_gives_null_outputs(confluent) -> None:
    row = confluent["tombstone"]
    assert (row["_raw"], row["_decode_error"], row["_schema_id"]) == (None, None, None)


def test_another_message_of_the_same_file_is_named(spark) -> None:
    payment, _ = serialize(SHOP, "kappalake.test.Payment", "shop", event_id="p-1", amount="3.00")
    rows = decode_cases(spark, {"payment": payment, "refund": REFUND}, descriptor_set=SHOP,
                        message="kappalake.test.Payment", fields=["event_id", "amount"])
    assert rows["payment"]["_raw"].asDict() == {"event_id": "p-1", "amount": "3.00"}
    assert rows["refund"]["_decode_error"].asDict() == {
        "rule": "message_index", "field": None,
        "message": "message index [1] names kappalake.test.Refund in the configured descriptor set, "
                   "not kappalake.test.Payment (index [0])"}


def test_input_columns_pass_through_unchanged(spark) -> None:
    source = records(spark, list(CASES.values()))
    decoded = decode_protobuf(source, DESC, PAYMENT, FIELDS, "confluent")
    assert decoded.columns == [*source.columns, "_raw", "_decode_error", "_schema_id"]
    assert decoded.schema["_raw"].dataType.simpleString() == (
        "struct<event_id:string,card_id:string,merchant_id:string,amount:string,currency:string,country:string,"
        "event_time:timestamp>")
    assert_df_equality(decoded.select(*source.columns), source, ignore_row_order=True)


def test_plain_wire(spark) -> None:
    cls = load_message(DESC, PAYMENT).message_class
    plain = cls(event_id="evt-9", amount="99.99", currency="USD").SerializeToString()
    rows = decode_cases(spark, {"plain": plain, "empty": b"", "framed": GOOD, "broken": plain[:-2]}, wire="plain")
    assert rows["plain"]["_raw"]["event_id"] == "evt-9" and rows["plain"]["_raw"]["amount"] == "99.99"
    assert rows["plain"]["_schema_id"] is None and rows["plain"]["_decode_error"] is None
    assert rows["empty"]["_raw"].asDict() == dict.fromkeys(FIELDS)  # all defaults: no id, no time
    assert rows["framed"]["_decode_error"]["rule"] == "protobuf"  # a Confluent header is not a Payment
    assert rows["broken"]["_decode_error"]["message"].startswith(NOT_PAYMENT)


def test_every_field_kind_decodes(spark) -> None:
    shop = load_message(SHOP, "kappalake.test.Kitchen")
    full = shop.message_class(s="x", b=b"\x00\x01", flag=True, i32=-5, si32=-6, sf32=-7, u32=2**32 - 1, f32=2**32 - 2,
                              i64=-(2**63), si64=2**63 - 1, sf64=-9, u64=2**64 - 1, f64=2**64 - 2, fl=0.5, db=1e300,
                              status=2, maybe="", maybe_n=0)
    full.at.seconds, full.at.nanos = -1, 999_999_999  # 1 µs before the epoch (nanoseconds truncate)
    full.note.value, full.count.value, full.ratio.value, full.big.value = "", 0, 2.5, 2**64 - 1
    unknown_enum = shop.message_class(status=7)
    bad_time = shop.message_class()
    bad_time.at.seconds = 253_402_300_800  # 10000-01-01
    fields = [f.name for f in shop.descriptor.fields]
    rows = decode_cases(spark, {"full": full.SerializeToString(), "empty": b"", "enum7": unknown_enum.SerializeToString(),
                                "bad_time": bad_time.SerializeToString()},
                        descriptor_set=SHOP, message="kappalake.test.Kitchen", fields=fields, wire="plain")
    assert rows["full"]["_raw"].asDict() == {
        "s": "x", "b": bytearray(b"\x00\x01"), "flag": True, "i32": -5, "si32": -6, "sf32": -7, "u32": 2**32 - 1,
        "f32": 2**32 - 2, "i64": -(2**63), "si64": 2**63 - 1, "sf64": -9, "u64": Decimal(2**64 - 1),
        "f64": Decimal(2**64 - 2), "fl": 0.5, "db": 1e300, "status": "DECLINED",
        "at": local(-1, 999999), "note": "", "count": 0, "ratio": 2.5, "big": Decimal(2**64 - 1),
        "maybe": "", "maybe_n": 0}
    assert rows["empty"]["_raw"].asDict() == {
        "s": None, "b": bytearray(), "flag": False, "i32": 0, "si32": 0, "sf32": 0, "u32": 0, "f32": 0, "i64": 0,
        "si64": 0, "sf64": 0, "u64": Decimal(0), "f64": Decimal(0), "fl": 0.0, "db": 0.0,
        "status": "STATUS_UNSPECIFIED", "at": None, "note": None, "count": None, "ratio": None, "big": None,
        "maybe": None, "maybe_n": None}
    assert rows["enum7"]["_raw"]["status"] == "7"
    assert rows["bad_time"]["_raw"] is None
    assert rows["bad_time"]["_decode_error"]["message"].endswith(
        "field 'at': Timestamp(seconds=253402300800, nanos=0) is out of range")


def test_configuration_errors_come_before_any_data_is_read(spark) -> None:
    source = records(spark, [GOOD])
    with pytest.raises(ValueError, match="has no field 'amount_cents'"):
        decode_protobuf(source, DESC, PAYMENT, ["event_id", "amount_cents"], "confluent")
    with pytest.raises(ValueError, match="is a repeated field: not supported yet"):
        decode_protobuf(source, SHOP, "kappalake.test.Unsupported", ["ok", "items"], "plain")
    with pytest.raises(ValueError, match="not in the descriptor set"):
        decode_protobuf(source, DESC, "Payment", FIELDS, "confluent")
    with pytest.raises(ValueError, match="wire must be"):
        decode_protobuf(source, DESC, PAYMENT, FIELDS, "json")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already has column"):
        decode_protobuf(source.withColumn("_raw", source["key"]), DESC, PAYMENT, FIELDS, "confluent")


def test_streaming_dataframes_decode_too(spark, tmp_path: Path) -> None:
    records(spark, [GOOD, CASES["truncated"], None]).write.parquet(str(tmp_path / "in"))
    stream = spark.readStream.schema(RECORD_SCHEMA).parquet(str(tmp_path / "in"))
    decoded = decode_protobuf(stream, DESC, PAYMENT, ["event_id", "event_time"], "confluent")
    assert decoded.isStreaming
    query = (decoded.writeStream.format("parquet").option("path", str(tmp_path / "out"))
             .option("checkpointLocation", str(tmp_path / "checkpoint")).trigger(availableNow=True).start())
    query.awaitTermination(120)
    assert query.exception() is None
    rows = {row["offset"]: row for row in spark.read.parquet(str(tmp_path / "out")).collect()}
    assert rows[0]["_raw"]["event_id"] == "evt-1" and rows[0]["_schema_id"] == SCHEMA_ID
    assert rows[1]["_decode_error"]["rule"] == "protobuf"
    assert rows[2]["_raw"] is None and rows[2]["_decode_error"] is None
