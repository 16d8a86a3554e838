"""parse_events on small record DataFrames shaped like the Kafka source.

Spark jobs are the slow part, so every case of one events config is a row of one DataFrame, parsed
and collected once per module (keyed by its Kafka offset); each test then looks up its own rows.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from kappalake.config import load_pipeline
from kappalake.config.models import EventsConfig
from kappalake.transforms.parse import field_column, is_valid, parse_events
from kappalake.transforms.records import RECORD_COLUMNS

CONF = Path(__file__).resolve().parents[2] / "conf"
PAYMENTS = load_pipeline("payments", CONF, "local").events
IOT = load_pipeline("iot", CONF, "local").events
# Small enough to test the size limit, with an age limit on top of the default max_future (1 hour).
STRICT = PAYMENTS.model_copy(update={"max_bytes": 256, "max_age": "1 day"})

RECORD_SCHEMA = "key binary, value binary, topic string, partition int, offset long, kafka_timestamp timestamp"
ARRIVAL = datetime(2026, 11, 1, 12, 0, 1, tzinfo=timezone.utc)  # the Kafka timestamp of every case
EVENT_TIME = datetime(2026, 11, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
MISSING = object()


def payment(**fields: Any) -> bytes:
    """A valid payments event as JSON bytes; keyword arguments override fields (MISSING drops one)."""
    event: dict[str, Any] = {"event_id": "e-1", "card_id": "card-1", "merchant_id": "m-1", "amount": 12.5,
                             "currency": "EUR", "country": "DE", "event_time": "2026-11-01T12:00:00.123Z"}
    event.update(fields)
    return json.dumps({k: v for k, v in event.items() if v is not MISSING}).encode()


def reading(**fields: Any) -> bytes:
    """A valid IoT reading as JSON bytes (json.dumps writes NaN/Infinity as bare tokens, as Python producers do)."""
    event: dict[str, Any] = {"event_id": "r-1", "device_id": "dev-1", "sensor": "humidity", "value": 21.5,
                             "event_time": "2026-11-01T12:00:00Z"}
    event.update(fields)
    return json.dumps({k: v for k, v in event.items() if v is not MISSING}).encode()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def padded_to(size: int) -> bytes:
    """A valid payment of exactly ``size`` bytes."""
    bare = len(payment(note=""))
    return payment(note="x" * (size - bare))


PAYMENT_CASES: dict[str, bytes | None] = {
    "valid": payment(),
    "truncated": b'{"event_id": "e-1", "amo',
    "array": b'[{"event_id": "e-1"}]',
    "two_objects": payment() + payment(amount=-1),
    "two_objects_spaced": payment() + b" \n" + payment(),
    "object_then_brace": payment() + b"}",
    "trailing_newline": payment() + b"\r\n",
    "number": b"42",
    "string": b'"hello"',
    "json_null": b"null",
    "empty_bytes": b"",
    "invalid_utf8": b'{"event_id": "\xff\xfe"}',
    "tombstone": None,
    "amount_free": payment(amount="free"),
    "time_yesterday": payment(event_time="yesterday"),
    "amount_overflow": payment(amount=12345678901.5),  # 11 integer digits do not fit decimal(12,2)
    "missing_merchant": payment(merchant_id=MISSING),
    "missing_several": payment(card_id=MISSING, currency=MISSING, event_time=MISSING),
    "empty_object": b"{}",
    "json_null_field": payment(country=None),
    "mixed": payment(amount="free", currency="XYZ", country=MISSING),
    "below_min": payment(amount=-0.01),
    "above_max": payment(amount=1000000.01),
    "at_min": payment(amount=0),
    "at_max": payment(amount=1000000),
    "currency_xyz": payment(currency="XYZ"),
    "currency_lower": payment(currency="eur"),
    "future": payment(event_time=iso(ARRIVAL + timedelta(hours=2, milliseconds=500))),
    "future_boundary": payment(event_time=iso(ARRIVAL + timedelta(hours=1))),
    "old_without_max_age": payment(event_time="2025-11-01T12:00:00Z"),
    "extra_fields": payment(note="unknown", nested={"a": [1, 2]}, flag=True),
    "numbers_as_strings": payment(event_id=123, amount="12.50"),
    "offset_time": payment(event_time="2026-11-01T14:00:00.123+02:00"),
}
STRICT_CASES: dict[str, bytes | None] = {
    "valid": payment(),
    "exactly_max_bytes": padded_to(256),
    "oversized": padded_to(257),
    "oversized_garbage": b"\xff" * 300,  # size is checked first: one error, not an encoding error too
    "too_old": payment(event_time="2026-10-30T12:00:00Z"),
    "age_boundary": payment(event_time=iso(ARRIVAL - timedelta(days=1))),
}
IOT_CASES: dict[str, bytes | None] = {
    "valid": reading(),
    "value_as_string": reading(value="21.5"),
    "nan_token": reading(value=float("nan")),
    "nan_string": reading(value="NaN"),
    "infinity_token": reading(value=float("inf")),
    "minus_infinity_token": reading(value=float("-inf")),
    "overflow": reading(value=MISSING)[:-1] + b', "value": 1e400}',
    "missing_value": reading(value=MISSING),
    "unknown_sensor": reading(sensor="wind"),
    "tombstone": None,
}


def parse_cases(spark, events: EventsConfig, cases: dict[str, bytes | None], topic: str
                ) -> tuple[DataFrame, dict[str, Row]]:
    """Parse every case (offset = its position) once; the cached result and its rows by case name."""
    records = spark.createDataFrame(
        [(f"k-{i}".encode(), value, topic, i % 3, i, ARRIVAL) for i, value in enumerate(cases.values())],
        RECORD_SCHEMA)
    parsed = parse_events(records, events).cache()
    by_offset = {row["offset"]: row for row in parsed.collect()}
    return parsed, {name: by_offset[i] for i, name in enumerate(cases)}


@pytest.fixture(scope="module")
def payments(spark) -> tuple[DataFrame, dict[str, Row]]:
    parsed, rows = parse_cases(spark, PAYMENTS, PAYMENT_CASES, "payments")
    yield parsed, rows
    parsed.unpersist()


@pytest.fixture(scope="module")
def strict(spark) -> dict[str, Row]:
    return parse_cases(spark, STRICT, STRICT_CASES, "payments")[1]


@pytest.fixture(scope="module")
def iot(spark) -> dict[str, Row]:
    return parse_cases(spark, IOT, IOT_CASES, "iot")[1]


def spark_rows(like: DataFrame, rows: list[tuple], schema: str) -> DataFrame:
    return like.sparkSession.createDataFrame(rows, schema)


def rules(row: Row) -> list[str]:
    return [f"{e['rule']}:{e['field']}" if e["field"] else e["rule"] for e in row["_errors"]]


def message(row: Row, rule: str) -> str:
    (found,) = [e["message"] for e in row["_errors"] if e["rule"] == rule]
    return found


# --------------------------------------------------------------------------- valid payloads

def test_valid_payloads_get_typed_columns_and_no_errors(payments) -> None:
    parsed, _ = payments
    names = ("valid", "numbers_as_strings", "offset_time", "extra_fields", "at_min", "at_max")
    offsets = [list(PAYMENT_CASES).index(name) for name in names]

    actual = (parsed.where(F.col("offset").isin(offsets))
              .select("offset", *PAYMENTS.schema_, F.unix_millis("event_time").alias("epoch_ms"),
                      F.date_format("event_time", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("utc"), "_errors")
              .orderBy("offset"))

    ms = int(EVENT_TIME.timestamp() * 1000)
    utc = "2026-11-01T12:00:00.123Z"
    event_ids = {"numbers_as_strings": "123"}
    amounts = {"at_min": Decimal("0.00"), "at_max": Decimal("1000000.00")}
    expected = spark_rows(parsed, sorted(
        (offset, event_ids.get(name, "e-1"), "card-1", "m-1", amounts.get(name, Decimal("12.50")), "EUR", "DE",
         EVENT_TIME, ms, utc, []) for name, offset in zip(names, offsets)
    ), "offset long, event_id string, card_id string, merchant_id string, amount decimal(12,2), currency string, "
       "country string, event_time timestamp, epoch_ms long, utc string, "
       "_errors array<struct<rule:string,field:string,message:string>>")
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_output_keeps_record_columns_then_typed_fields_then_errors(payments) -> None:
    parsed, rows = payments
    assert tuple(parsed.columns) == RECORD_COLUMNS + tuple(PAYMENTS.schema_) + ("_errors",)
    types = dict(parsed.dtypes)
    assert types["amount"] == "decimal(12,2)" and types["event_time"] == "timestamp"
    assert types["value"] == "binary"
    assert rows["valid"]["value"] == PAYMENT_CASES["valid"]  # the original bytes, untouched


def test_extra_unknown_fields_are_ignored(payments) -> None:
    _, rows = payments
    assert rows["extra_fields"]["_errors"] == []
    assert "note" not in rows["extra_fields"].asDict()


def test_numbers_given_as_strings_are_accepted(payments) -> None:
    row = payments[1]["numbers_as_strings"]
    assert row["_errors"] == [] and row["amount"] == Decimal("12.50") and row["event_id"] == "123"


# --------------------------------------------------------------------------- envelope: bytes and JSON

def test_every_case_reports_exactly_its_rules(payments) -> None:
    """One table of (case, rules) over the whole batch, in schema order of the failing fields."""
    parsed, _ = payments
    expected_rules = {
        "truncated": ["json"], "array": ["json"], "two_objects": ["json"], "two_objects_spaced": ["json"],
        "object_then_brace": ["json"], "number": ["json"], "string": ["json"],
        "json_null": ["json"], "empty_bytes": ["json"], "invalid_utf8": ["encoding"], "tombstone": ["empty"],
        "amount_free": ["type:amount"], "time_yesterday": ["type:event_time"], "amount_overflow": ["type:amount"],
        "missing_merchant": ["required:merchant_id"],
        "missing_several": ["required:card_id", "required:currency", "required:event_time"],
        "empty_object": [f"required:{name}" for name in PAYMENTS.schema_],
        "json_null_field": ["required:country"],
        "mixed": ["type:amount", "allowed:currency", "required:country"],
        "below_min": ["min:amount"], "above_max": ["max:amount"],
        "currency_xyz": ["allowed:currency"], "currency_lower": ["allowed:currency"],
        "future": ["future:event_time"],
    }
    actual = parsed.select("offset", F.transform("_errors", lambda e: F.concat_ws(":", e["rule"], e["field"]))
                           .alias("rules")).orderBy("offset")
    expected = spark_rows(parsed, [(i, expected_rules.get(name, [])) for i, name in enumerate(PAYMENT_CASES)],
                          "offset long, rules array<string>")
    assert_df_equality(actual, expected, ignore_nullable=True)


@pytest.mark.parametrize("case", ["truncated", "array", "number", "string", "json_null", "empty_bytes",
                                  "two_objects", "two_objects_spaced", "object_then_brace"])
def test_payload_that_is_not_a_json_object(payments, case: str) -> None:
    row = payments[1][case]
    assert rules(row) == ["json"]
    text = PAYMENT_CASES[case].decode()
    assert message(row, "json") == f"payload is not a JSON object: {text[:120]}"
    assert all(row[name] is None for name in PAYMENTS.schema_)  # no partial values from a broken payload


def test_invalid_utf8_is_an_encoding_error_only(payments) -> None:
    row = payments[1]["invalid_utf8"]
    assert rules(row) == ["encoding"]
    assert message(row, "encoding") == "payload is not valid UTF-8"


def test_tombstone_is_reported_as_empty(payments) -> None:
    row = payments[1]["tombstone"]
    assert rules(row) == ["empty"] and message(row, "empty") == "record has no value (tombstone)"


def test_oversized_payload_is_rejected_before_decoding(strict) -> None:
    assert rules(strict["oversized"]) == ["oversized"]
    assert message(strict["oversized"], "oversized") == "payload of 257 bytes exceeds events.max_bytes (256)"
    assert rules(strict["oversized_garbage"]) == ["oversized"]
    assert "payload of 300 bytes" in message(strict["oversized_garbage"], "oversized")
    assert strict["exactly_max_bytes"]["_errors"] == []  # the limit itself is allowed
    assert strict["valid"]["_errors"] == []


# --------------------------------------------------------------------------- field rules

def test_wrong_types_are_reported_not_nulled(payments) -> None:
    _, rows = payments
    assert rules(rows["amount_free"]) == ["type:amount"]
    assert message(rows["amount_free"], "type") == "field 'amount': expected decimal(12,2), got free"
    assert rows["amount_free"]["amount"] is None
    # 'yesterday' is not a timestamp: Spark resolves special strings only for literals, not for data.
    assert rules(rows["time_yesterday"]) == ["type:event_time"]
    assert message(rows["time_yesterday"], "type") == "field 'event_time': expected timestamp, got yesterday"
    assert "expected decimal(12,2)" in message(rows["amount_overflow"], "type")


def test_missing_required_fields_are_each_reported(payments) -> None:
    _, rows = payments
    assert message(rows["missing_merchant"], "required") == "missing required field 'merchant_id'"
    several = [e["message"] for e in rows["missing_several"]["_errors"]]
    assert several == ["missing required field 'card_id'", "missing required field 'currency'",
                       "missing required field 'event_time'"]
    assert len(rows["empty_object"]["_errors"]) == len(PAYMENTS.schema_)
    assert rules(rows["json_null_field"]) == ["required:country"]  # an explicit null is missing too


def test_several_problems_in_one_payload_are_all_reported(payments) -> None:
    row = payments[1]["mixed"]
    assert [(e["rule"], e["field"]) for e in row["_errors"]] == [
        ("type", "amount"), ("allowed", "currency"), ("required", "country")]
    assert row["currency"] == "XYZ" and row["card_id"] == "card-1"


def test_min_and_max_are_inclusive(payments) -> None:
    _, rows = payments
    assert message(rows["below_min"], "min") == "field 'amount': -0.01 is below the minimum 0"
    assert message(rows["above_max"], "max") == "field 'amount': 1000000.01 is above the maximum 1000000"
    assert rows["at_min"]["_errors"] == [] and rows["at_max"]["_errors"] == []


def test_allowed_values_are_case_sensitive(payments) -> None:
    _, rows = payments
    assert message(rows["currency_xyz"], "allowed") == \
        "field 'currency': XYZ is not one of USD, EUR, GBP, JPY, BRL, INR"
    assert rules(rows["currency_lower"]) == ["allowed:currency"]


def test_numeric_allowed_values_compare_by_value(spark) -> None:
    events = EventsConfig.model_validate({
        "id": "id", "time": "t", "max_future": None,
        "schema": {"id": "string", "t": "timestamp", "n": {"type": "int", "allowed": [1, 2]},
                   "d": {"type": "double", "allowed": [1, 2.5]}, "m": {"type": "decimal(5,2)", "allowed": [1, "2.5"]}}})
    payloads = [b'{"id": "a", "t": "2026-11-01T12:00:00Z", "n": 1, "d": 1, "m": 1}',
                b'{"id": "b", "t": "2026-11-01T12:00:00Z", "n": "2", "d": 2.50, "m": "2.50"}',
                b'{"id": "c", "t": "2026-11-01T12:00:00Z", "n": 3, "d": 1.5, "m": 2.51}']
    records = spark.createDataFrame([(None, p, "t", 0, i, ARRIVAL) for i, p in enumerate(payloads)], RECORD_SCHEMA)
    rows = sorted(parse_events(records, events).collect(), key=lambda r: r["offset"])
    assert [r["_errors"] for r in rows[:2]] == [[], []]
    assert [e["message"] for e in rows[2]["_errors"]] == [
        "field 'n': 3 is not one of 1, 2", "field 'd': 1.5 is not one of 1, 2.5",
        "field 'm': 2.51 is not one of 1, 2.5"]


def test_nan_and_infinity_are_not_finite(iot) -> None:
    for case in ("nan_token", "nan_string", "infinity_token", "minus_infinity_token", "overflow"):
        assert rules(iot[case]) == ["finite:value"], case
        assert message(iot[case], "finite").startswith("field 'value': expected a finite number, got ")
    assert message(iot["nan_string"], "finite").endswith("got NaN")
    assert "Infinity" in message(iot["minus_infinity_token"], "finite")


def test_a_field_named_like_a_record_column_keeps_the_kafka_bytes(iot) -> None:
    """IoT's payload field 'value' must not replace the record's value (the raw bytes)."""
    typed = field_column("value")
    assert iot["valid"]["_errors"] == [] and iot["valid"][typed] == 21.5
    assert iot["value_as_string"]["_errors"] == [] and iot["value_as_string"][typed] == 21.5
    assert iot["valid"]["value"] == IOT_CASES["valid"]
    # A reading without a value is a missing field, not a tombstone; a real tombstone still is one.
    assert rules(iot["missing_value"]) == ["required:value"]
    assert rules(iot["tombstone"]) == ["empty"]
    assert rules(iot["unknown_sensor"]) == ["allowed:sensor"]


# --------------------------------------------------------------------------- event time vs Kafka time

def test_event_time_far_in_the_future_is_rejected(payments) -> None:
    _, rows = payments
    assert message(rows["future"], "future") == (
        "field 'event_time': 2026-11-01 14:00:01.5 is more than 1 hour after the Kafka timestamp")
    assert rows["future_boundary"]["_errors"] == []  # exactly max_future ahead is still accepted


def test_old_event_time_is_rejected_only_with_max_age(payments, strict) -> None:
    assert payments[1]["old_without_max_age"]["_errors"] == []
    assert rules(strict["too_old"]) == ["too_old:event_time"]
    assert message(strict["too_old"], "too_old") == (
        "field 'event_time': 2026-10-30 12:00:00 is more than 1 day before the Kafka timestamp")
    assert strict["age_boundary"]["_errors"] == []


def test_an_explicit_offset_is_normalised_to_the_same_instant(payments) -> None:
    _, rows = payments
    # 14:00:00.123+02:00 is the instant 12:00:00.123Z (the epoch/UTC form is asserted with the valid payloads).
    assert rows["offset_time"]["event_time"] == rows["valid"]["event_time"]
    assert rows["valid"]["event_time"].microsecond == 123000


def test_is_valid_matches_empty_errors(payments) -> None:
    parsed, rows = payments
    valid = {r["offset"] for r in parsed.where(is_valid(parsed)).select("offset").collect()}
    assert valid == {r["offset"] for r in rows.values() if not r["_errors"]}


def test_decimal_with_too_many_places_is_rejected_not_rounded(spark) -> None:
    from kappalake.config import load_pipeline
    from kappalake.transforms.parse import parse_events

    events = load_pipeline("payments", Path("conf"), "local").events
    good = {"event_id": "e1", "card_id": "c", "merchant_id": "m", "amount": 12.5, "currency": "EUR",
            "country": "DE", "event_time": "2026-11-01T12:00:00.000Z"}
    records = spark.createDataFrame(
        [(None, json.dumps(good).encode(), "t", 0, 0, datetime(2026, 11, 1, 12, 0)),
         (None, json.dumps({**good, "amount": 12.345}).encode(), "t", 0, 1, datetime(2026, 11, 1, 12, 0))],
        "key binary, value binary, topic string, partition int, offset long, kafka_timestamp timestamp")
    out = parse_events(records, events).orderBy("offset").collect()
    assert out[0]["_errors"] == [] and str(out[0]["amount"]) == "12.50"
    assert [e["rule"] for e in out[1]["_errors"]] == ["scale"]
    assert "12.345 has more decimal places than decimal(12,2)" in out[1]["_errors"][0]["message"]
