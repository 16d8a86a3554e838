"""Hostile payloads through the real parse (Spark): every record ends valid or dead-lettered with a reason.

Each hypothesis example is a list of generated Kafka records parsed as ONE DataFrame (Spark calls are the
slow part). Every example checks the invariants that hold for any input:

* no exception; every input record comes out exactly once (valid + rejected == input, same offsets);
* a rejected record carries at least one error, each with a rule and a non-empty message, and its
  dead-letter row has ``error_class`` (the first rule) and a non-empty ``error_message``;
* a valid record satisfies every declared rule (required fields present, amount within min/max,
  currency allowed, event time not beyond ``max_future``; for IoT a finite value);

and, where the generator knows what it built, the outcome: a well-formed event is valid with the values
that were sent; a payload missing a required field, with a wrong amount type, NaN/Infinity, an
out-of-range amount, invalid UTF-8, a non-object, or an event time too far in the future is rejected with
the matching rule. A payload larger than ``events.max_bytes`` is rejected with a reason naming it.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from kappalake.config import load_pipeline
from kappalake.config.models import EventsConfig
from kappalake.transforms.dead_letter import to_dead_letter
from kappalake.transforms.parse import field_column, parse_events

CONF = Path(__file__).resolve().parents[2] / "conf"
PAYMENTS = load_pipeline("payments", CONF, "local").events
IOT = load_pipeline("iot", CONF, "local").events
SMALL = PAYMENTS.model_copy(update={"max_bytes": 300})

RECORD_SCHEMA = "key binary, value binary, topic string, partition int, offset long, kafka_timestamp timestamp"
UTC = timezone.utc
ARRIVAL = datetime(2026, 11, 1, 12, 0, 1, tzinfo=UTC)
ALLOWED = [str(v) for v in PAYMENTS.schema_["currency"].allowed or []]
REQUIRED = [name for name, spec in PAYMENTS.schema_.items() if spec.required]
SENSORS = [str(v) for v in IOT.schema_["sensor"].allowed or []]

# derandomize: the same examples on every run; database=None: nothing written into the repository.
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])

ACCEPT, REJECT, ANY = "accept", "reject", "any"


# --------------------------------------------------------------------------- building blocks

def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


class Case:
    """One generated record: its bytes, the Kafka timestamp, what must happen, and what was sent."""

    def __init__(self, value: bytes | None, expect: str, kind: str, rules: tuple[str, ...] = (),
                 sent: dict[str, Any] | None = None, arrival: datetime = ARRIVAL, key: bytes | None = b"k") -> None:
        self.value, self.expect, self.kind, self.rules, self.sent = value, expect, kind, rules, sent
        self.arrival, self.key = arrival, key

    def __repr__(self) -> str:
        shown = None if self.value is None else (self.value[:160] + (b"..." if len(self.value) > 160 else b""))
        return f"Case({self.kind}, {self.expect}{list(self.rules) or ''}, {shown!r}, len={len(self.value or b'')})"


arrivals = st.one_of(
    st.just(ARRIVAL),
    st.integers(0, 4_100_000_000_000).map(lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)),
)
names = st.text(min_size=1, max_size=24)
cents = st.integers(0, 100_000_000)  # 0.00 .. 1,000,000.00: inside min/max and decimal(12,2)


@st.composite
def valid_payment(draw) -> tuple[dict[str, Any], datetime]:
    arrival = draw(arrivals)
    # Anything from ten years before the Kafka timestamp to just under max_future (1 hour) after it.
    offset_ms = draw(st.integers(-10 * 365 * 86_400_000, 3_600_000 - 1))
    event = {
        "event_id": draw(names), "card_id": draw(names), "merchant_id": draw(names),
        "amount": draw(cents) / 100, "currency": draw(st.sampled_from(ALLOWED)), "country": draw(names),
        "event_time": iso(arrival + timedelta(milliseconds=offset_ms)),
    }
    return event, arrival


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10 ** 30), 10 ** 30),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
extra_names = st.one_of(st.text(max_size=16), st.sampled_from(
    ["", "value", "key", "offset", "topic", "_errors", "_raw", "Event_ID", "EVENT_TIME", "Amount", "null", "__proto__"]
)).filter(lambda name: name not in PAYMENTS.schema_)


def nested(depth: int, kind: str) -> str:
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


def with_raw(event: dict[str, Any], field: str, raw: str) -> bytes:
    """The event's JSON with ``field`` set to the raw JSON text ``raw`` (tokens json.dumps will not write)."""
    marker = "\u0000MARK\u0000"
    return dumps({**event, field: marker}).replace(json.dumps(marker).encode(), raw.encode())


@st.composite
def hostile_case(draw) -> Case:
    """One record from a family of hostile inputs, with what must happen to it."""
    event, arrival = draw(valid_payment())
    family = draw(st.sampled_from([
        "valid", "extra_fields", "random_bytes", "invalid_utf8", "not_an_object", "truncated", "missing_required",
        "null_required", "wrong_type_amount", "wrong_type_time", "wrong_type_string", "amount_out_of_range",
        "nan_infinity", "future_time", "past_time", "garbage_time", "duplicate_keys", "deep_nesting", "huge_string",
        "tombstone", "json_noise",
    ]))
    key = draw(st.one_of(st.none(), st.binary(max_size=8)))
    case = lambda value, expect, rules=(), sent=None: Case(value, expect, family, tuple(rules), sent, arrival, key)  # noqa: E731
    if family == "valid":
        return case(dumps(event), ACCEPT, sent=event)
    if family == "extra_fields":
        extra = draw(st.dictionaries(extra_names, json_values, min_size=1, max_size=4))
        return case(dumps({**extra, **event}), ACCEPT, sent=event)
    if family == "random_bytes":
        return case(draw(st.binary(max_size=400)), ANY)
    if family == "invalid_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                                    b"\xc0\xaf", b"\x80"]))
        text = dumps(event)
        at = draw(st.integers(0, len(text)))
        return case(text[:at] + bad + text[at:], REJECT, ["encoding"])
    if family == "not_an_object":
        value = draw(st.one_of(st.lists(json_values, max_size=3), st.text(max_size=20), st.integers(), st.booleans(),
                               st.none()))
        return case(json.dumps(value).encode(), REJECT)
    if family == "truncated":
        text = dumps(event)
        return case(text[:draw(st.integers(0, len(text) - 1))], REJECT)
    if family == "missing_required":
        gone = draw(st.lists(st.sampled_from(REQUIRED), min_size=1, unique=True))
        return case(dumps({k: v for k, v in event.items() if k not in gone}), REJECT, [f"required:{g}" for g in gone])
    if family == "null_required":
        field = draw(st.sampled_from(REQUIRED))
        return case(dumps({**event, field: None}), REJECT, [f"required:{field}"])
    if family == "wrong_type_amount":
        raw = draw(st.one_of(st.sampled_from(['"free"', '"12,50"', "true", "false", "[1]", '{"v": 1}', '"€12"', '""']),
                             st.text(alphabet="abcxyz,;€ ", min_size=1, max_size=8).map(json.dumps)))
        return case(with_raw(event, "amount", raw), REJECT, ["type:amount"])
    if family == "wrong_type_time":
        raw = draw(st.sampled_from(["true", "[2026]", '{"t": 1}', '"yesterday"', '"not a time"', "1793534400",
                                    '"2026-13-45T99:99:99Z"', '""', "12.5"]))
        return case(with_raw(event, "event_time", raw), REJECT, ["type:event_time"])
    if family == "wrong_type_string":  # a number, bool, list or object where text is declared: either way, no crash
        field = draw(st.sampled_from(["event_id", "card_id", "merchant_id", "country"]))
        return case(with_raw(event, field, draw(st.sampled_from(["123", "1.5e300", "true", "[1, 2]", '{"a": null}']))),
                    ANY)
    if family == "amount_out_of_range":
        raw, rule = draw(st.sampled_from([
            ("-0.01", "min"), ("1000000.01", "max"), ("1e400", None), ("-1e400", None), ("1e308", None),
            ("123456789012345678901234567890", None), ("99999999999.99", None), ("12.345", "scale"),
            ("-1", "min"), ("1E7", "max"),
        ]))
        return case(with_raw(event, "amount", raw), REJECT, [f"{rule}:amount"] if rule else [])
    if family == "nan_infinity":
        raw = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", '"NaN"', '"Infinity"', "+Infinity", "-NaN"]))
        return case(with_raw(event, "amount", raw), REJECT)
    if family == "future_time":
        last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)  # up to the last second Python can write
        ahead = draw(st.integers(3_600_001, int((last - arrival).total_seconds() * 1000)))
        moment = arrival + timedelta(milliseconds=ahead)
        return case(dumps({**event, "event_time": iso(moment)}), REJECT, ["future:event_time"])
    if family == "past_time":  # max_age is off for payments: old is fine
        moment = datetime(1, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 62_000_000_000)))
        moment = min(moment, arrival)
        sent = {**event, "event_time": iso(moment)}
        return case(dumps(sent), ACCEPT, sent=sent)
    if family == "garbage_time":
        raw = draw(st.one_of(st.text(max_size=30), st.sampled_from(
            ["+294248-01-01T00:00:00Z", "-0001-01-01T00:00:00Z", "0000-00-00T00:00:00Z", "9999-99-99",
             "2026-11-01T12:00:00+25:00", "2026-11-01T12:00:00.123456789123Z", "2026-02-30T00:00:00Z"])))
        return case(dumps({**event, "event_time": raw}), ANY)
    if family == "duplicate_keys":
        field = draw(st.sampled_from(list(event)))
        other = draw(json_values)
        text = dumps(event)[:-1] + b", " + json.dumps(field).encode() + b": " + json.dumps(other).encode() + b"}"
        first = draw(st.booleans())
        if first:  # the duplicate before the original instead
            text = b"{" + json.dumps(field).encode() + b": " + json.dumps(other).encode() + b", " + dumps(event)[1:]
        return case(text, ANY)
    if family == "deep_nesting":
        depth = draw(st.one_of(st.integers(1, 200), st.integers(900, 1100), st.integers(2000, 5000)))
        raw = nested(depth, draw(st.sampled_from(["list", "object"])))
        field = draw(st.sampled_from(["nested", "amount", "event_id"]))  # an extra field, a number, a text field
        return case(with_raw(event, field, raw), REJECT if field == "amount" else ANY)
    if family == "huge_string":
        size = draw(st.one_of(st.integers(0, 2000), st.integers(900_000, 1_100_000)))
        field = draw(st.sampled_from(["note", "event_id"]))
        sent = {**event, field: "x" * size}
        value = dumps(sent)
        if len(value) > PAYMENTS.max_bytes:
            return case(value, REJECT, ["oversized"])
        return case(value, ACCEPT, sent=sent)
    if family == "tombstone":
        return case(None, REJECT, ["empty"])
    # json_noise: a well-formed event with random JSON noise around or inside it
    noise = draw(st.sampled_from([b" ", b"\n", b"\t", b"\r\n"]))
    return case(noise + dumps(event) + noise, ACCEPT, sent=event)


# --------------------------------------------------------------------------- running and checking

def parse_batch(spark, events: EventsConfig, cases: list[Case]):
    """Parse the cases as one DataFrame; return (parsed rows by offset, dead-letter rows by offset)."""
    records = spark.createDataFrame(
        [(c.key, c.value, "hostile", i % 3, i, c.arrival) for i, c in enumerate(cases)], RECORD_SCHEMA)
    parsed = parse_events(records, events).cache()
    try:
        typed = [F.col(field_column(name)).cast("string").alias(name) for name in events.schema_]
        future = (F.col(field_column(events.time)) <= F.col("kafka_timestamp") + F.expr("INTERVAL 1 HOUR")) \
            if events.max_future else F.lit(True)
        rows = {r["offset"]: r for r in parsed.select(
            "offset", *typed, future.alias("_time_ok"), "_errors").collect()}
        dead = {r["source_offset"]: r for r in to_dead_letter(parsed.where(F.size("_errors") > 0), "hostile", "1")
                .select("source_offset", "error_class", "error_message", "failed_rules").collect()}
        valid_count = parsed.where(F.size("_errors") == 0).count()
        rejected_count = parsed.where(F.size("_errors") > 0).count()
    finally:
        parsed.unpersist()
    return rows, dead, valid_count, rejected_count


def rule_names(row) -> list[str]:
    return [f"{e['rule']}:{e['field']}" if e["field"] else e["rule"] for e in row["_errors"]]


def check_invariants(cases: list[Case], rows, dead, valid_count: int, rejected_count: int,
                     events: EventsConfig) -> None:
    assert sorted(rows) == list(range(len(cases))), "records lost or multiplied by the parse"
    assert valid_count + rejected_count == len(cases), f"{valid_count} valid + {rejected_count} rejected != {len(cases)}"
    assert sorted(dead) == sorted(i for i, r in rows.items() if r["_errors"]), "dead letters != rejected rows"
    for i, case in enumerate(cases):
        row = rows[i]
        where = f"record {i}: {case!r} -> {[(e['rule'], e['field'], e['message']) for e in row['_errors']]}"
        if row["_errors"]:
            for error in row["_errors"]:
                assert error["rule"], where
                assert error["message"], where  # never a null or empty reason
            letter = dead[i]
            assert letter["error_class"] == row["_errors"][0]["rule"], where
            assert letter["error_message"], where
            assert len(letter["failed_rules"]) == len(row["_errors"]), where
        else:
            check_valid_row(row, events, where)
        if case.expect == ACCEPT:
            assert not row["_errors"], f"a well-formed event was rejected: {where}"
            if case.sent is not None:
                check_values(row, case.sent, events, where)
        elif case.expect == REJECT:
            assert row["_errors"], f"a hostile record passed as valid: {where}"
            if case.rules:
                found = set(rule_names(row))
                assert set(case.rules) <= found, f"expected rules {case.rules}: {where}"


def check_valid_row(row, events: EventsConfig, where: str) -> None:
    """A valid row obeys every declared rule."""
    for name, spec in events.schema_.items():
        value = row[name]
        if spec.required:
            assert value is not None, f"valid row without required {name}: {where}"
        if value is None:
            continue
        if spec.type.startswith("decimal") or spec.type in ("double", "float", "int", "long"):
            number = float(value)
            assert math.isfinite(number), f"valid row with non-finite {name}={value}: {where}"
            if spec.min is not None:
                assert number >= spec.min, f"{name}={value} below min: {where}"
            if spec.max is not None:
                assert number <= spec.max, f"{name}={value} above max: {where}"
        if spec.allowed is not None:
            assert value in [str(v) for v in spec.allowed], f"{name}={value} not allowed: {where}"
    assert row["_time_ok"] is True, f"valid row beyond max_future: {where}"


def check_values(row, sent: dict[str, Any], events: EventsConfig, where: str) -> None:
    """A valid row carries exactly what was sent."""
    for name, spec in events.schema_.items():
        if name not in sent:
            continue
        got, want = row[name], sent[name]
        if spec.type.startswith("decimal"):
            assert Decimal(got) == Decimal(str(want)), f"{name}: {got} != {want}: {where}"
        elif spec.type in ("double", "float"):
            assert float(got) == float(want), f"{name}: {got} != {want}: {where}"
        elif spec.type == "timestamp":
            expected = datetime.fromisoformat(str(want).replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)
            assert datetime.fromisoformat(got) == expected, f"{name}: {got} != {want}: {where}"
        else:
            assert got == want, f"{name}: {got!r} != {want!r}: {where}"


# --------------------------------------------------------------------------- the properties

@SETTINGS
@given(cases=st.lists(hostile_case(), min_size=1, max_size=60))
def test_every_hostile_record_ends_valid_or_with_a_reason(spark, cases: list[Case]) -> None:
    rows, dead, valid_count, rejected_count = parse_batch(spark, PAYMENTS, cases)
    check_invariants(cases, rows, dead, valid_count, rejected_count, PAYMENTS)


def test_an_extra_field_named_like_the_corrupt_record_column_is_ignored(spark) -> None:
    """Unknown fields are ignored (README), whatever their name: a producer's ``_corrupt_record`` field must
    not make a well-formed event look like broken JSON."""
    event = {"event_id": "e-1", "card_id": "c", "merchant_id": "m", "amount": 1.5, "currency": "EUR",
             "country": "DE", "event_time": iso(ARRIVAL)}
    cases = [Case(dumps({**event, name: value}), ACCEPT, "extra_fields", sent=event)
             for name, value in (("_corrupt_record", "x"), ("_corrupt_record", 1), ("_corrupt_record", None))]
    rows, dead, valid_count, rejected_count = parse_batch(spark, PAYMENTS, cases)
    check_invariants(cases, rows, dead, valid_count, rejected_count, PAYMENTS)


@st.composite
def not_json_object(draw) -> bytes:
    """Text close to a JSON object that is not one (RFC 8259): what a sloppy producer sends."""
    event, _ = draw(valid_payment())
    text = json.dumps(event)
    # Spark's parser alone reads only the first JSON value: '{..}{..}' and '{..}}' must be rejected all the same.
    mutation = draw(st.sampled_from(["single_quotes", "trailing", "comment", "unquoted_key", "leading_zero",
                                     "trailing_comma", "hex", "plus", "two_objects", "extra_brace"]))
    if mutation == "single_quotes":
        return text.replace('"', "'").encode()
    if mutation == "trailing":
        return (text + draw(st.sampled_from([" x", " garbage", "]", " 1", ' "tail"', " null"]))).encode()
    if mutation == "comment":
        return ("/* c */" + text).encode()
    if mutation == "unquoted_key":
        return text.replace('"event_id"', "event_id", 1).encode()
    if mutation == "leading_zero":
        return text.replace('"amount": ', '"amount": 0', 1).encode()
    if mutation == "trailing_comma":
        return (text[:-1] + ", }").encode()
    if mutation == "two_objects":
        return (text + draw(st.sampled_from(["", " ", "\n"])) + text).encode()
    if mutation == "extra_brace":
        return (text + "}").encode()
    if mutation == "hex":
        return with_raw(event, "amount", "0x10")
    return with_raw(event, "amount", "+" + str(event["amount"]))


def strict_json_object(value: bytes) -> bool:
    """Python's reading of RFC 8259 (bare NaN/Infinity tolerated, as the README's producers write them)."""
    try:
        return isinstance(json.loads(value.decode("utf-8")), dict)
    except (ValueError, RecursionError):
        return False


@settings(SETTINGS, max_examples=15)
@given(values=st.lists(not_json_object(), min_size=1, max_size=40))
@example(values=[json.dumps({"event_id": "e-1", "card_id": "c", "merchant_id": "m", "amount": 1.5, "currency": "EUR",
                             "country": "DE", "event_time": iso(ARRIVAL)}).replace('"', "'").encode()])
@example(values=[json.dumps({"event_id": "e-1", "card_id": "c", "merchant_id": "m", "amount": 1.5, "currency": "EUR",
                             "country": "DE", "event_time": iso(ARRIVAL)}).encode() + b" garbage"])
def test_payload_that_is_not_a_json_object_is_never_valid(spark, values: list[bytes]) -> None:
    """README: a record must be 'a JSON object'; anything else is dead-lettered, never a silver event."""
    cases = [Case(v, REJECT if not strict_json_object(v) else ANY, "not_json") for v in values]
    rows, dead, valid_count, rejected_count = parse_batch(spark, PAYMENTS, cases)
    check_invariants(cases, rows, dead, valid_count, rejected_count, PAYMENTS)


@st.composite
def sized_case(draw) -> tuple[bytes, int]:
    """A payload of a chosen byte size around SMALL.max_bytes: a padded valid event, random or invalid bytes."""
    size = draw(st.one_of(st.integers(0, 2 * SMALL.max_bytes), st.sampled_from(
        [SMALL.max_bytes - 1, SMALL.max_bytes, SMALL.max_bytes + 1, 10 * SMALL.max_bytes])))
    kind = draw(st.sampled_from(["event", "multibyte_event", "bytes", "invalid_utf8"]))
    if kind in ("event", "multibyte_event"):
        base = dumps({"event_id": "e", "card_id": "c", "merchant_id": "m", "amount": 1.5, "currency": "EUR",
                      "country": "DE", "event_time": iso(ARRIVAL), "note": ""})
        pad = max(0, size - len(base))
        if kind == "multibyte_event":  # 'é' is 2 bytes: the limit counts bytes, not characters
            text = base[:-2] + ("é" * (pad // 2) + "x" * (pad % 2)).encode() + b'"}'
        else:
            text = base[:-2] + b"x" * pad + b'"}'
        return text, len(text)
    if kind == "bytes":
        value = draw(st.binary(min_size=size, max_size=size)) if size <= 700 else b"\x01" * size
        return value, size
    return (b"\xff" * size), size


@settings(SETTINGS, max_examples=15)
@given(items=st.lists(sized_case(), min_size=1, max_size=40))
def test_oversized_payloads_are_rejected_with_a_reason_naming_max_bytes(spark, items: list[tuple[bytes, int]]) -> None:
    cases = [Case(value, REJECT if size > SMALL.max_bytes else ANY, "sized",
                  ("oversized",) if size > SMALL.max_bytes else ()) for value, size in items]
    rows, dead, valid_count, rejected_count = parse_batch(spark, SMALL, cases)
    check_invariants(cases, rows, dead, valid_count, rejected_count, SMALL)
    for i, (value, size) in enumerate(items):
        errors = rows[i]["_errors"]
        oversized = [e for e in errors if e["rule"] == "oversized"]
        if len(value) > SMALL.max_bytes:
            assert [e["rule"] for e in errors] == ["oversized"], f"record {i} ({len(value)} bytes): {errors}"
            message = oversized[0]["message"]
            assert "max_bytes" in message and str(SMALL.max_bytes) in message and str(len(value)) in message, message
            assert dead[i]["error_class"] == "oversized"
        else:
            assert not oversized, f"record {i} of {len(value)} bytes flagged oversized: {errors}"


@st.composite
def iot_case(draw) -> Case:
    """IoT readings whose double value is hostile: NaN/Infinity tokens and strings, overflow, wrong types."""
    event = {"event_id": draw(names), "device_id": draw(names), "sensor": draw(st.sampled_from(SENSORS)),
             "value": 1.0, "event_time": iso(ARRIVAL - timedelta(seconds=draw(st.integers(0, 86_400))))}
    raw = draw(st.one_of(
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(["NaN", "Infinity", "-Infinity", '"NaN"', '"Infinity"', '"-Infinity"', "1e400", "-1e400",
                         "1e-400", '"21.5"', "true", "[1.0]", '{"v": 1}', '"nan"', '"inf"', '"+Infinity"',
                         "123456789012345678901234567890", "-0.0", "null", '"\\"NaN\\""', '"\\"1.5\\""']),
    ))
    must = REJECT if raw in ("NaN", "Infinity", "-Infinity", '"NaN"', '"Infinity"', '"-Infinity"', "null", "true",
                             "[1.0]", '{"v": 1}') else ANY
    return Case(with_raw(event, "value", raw), must, "iot_value")


@settings(SETTINGS, max_examples=15)
@given(cases=st.lists(iot_case(), min_size=1, max_size=50))
def test_no_nan_or_infinity_reaches_a_valid_iot_reading(spark, cases: list[Case]) -> None:
    rows, dead, valid_count, rejected_count = parse_batch(spark, IOT, cases)
    check_invariants(cases, rows, dead, valid_count, rejected_count, IOT)
