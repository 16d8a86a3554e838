"""The deterministic event generators: determinism, fault mix, record kinds and payload shape.

Pure Python: no Kafka, no Spark. The reference schemas are read from conf/pipelines/*.yml so the
generators and the pipelines that consume them cannot drift apart unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from kappalake.generator import GeneratedRecord, GeneratorOptions, make_stream
from kappalake.generator.payments import COUNTRIES
from kappalake.generator.records import format_time

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 21, 16, 0, 0, tzinfo=timezone.utc)
MIXED = GeneratorOptions(seed=7, late_fraction=0.1, duplicate_fraction=0.1, malformed_fraction=0.1)
KEY_FIELD = {"payments": "card_id", "iot": "device_id"}
NUMERIC_FIELD = {"payments": "amount", "iot": "value"}
KEY_PATTERN = {"payments": re.compile(r"^card-\d{6}$"), "iot": re.compile(r"^dev-\d{5}$")}
TIME_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
GENERATORS = ("payments", "iot")


def take(generator: str, options: GeneratorOptions, count: int, start: datetime = START,
         events_per_second: float = 1000.0) -> list[GeneratedRecord]:
    return list(make_stream(generator, options).take(count, start, events_per_second))


def reference_schema(generator: str) -> dict[str, dict]:
    pipeline = yaml.safe_load((REPO / "conf" / "pipelines" / f"{generator}.yml").read_text())
    return {name: (spec if isinstance(spec, dict) else {"type": spec})
            for name, spec in pipeline["events"]["schema"].items()}


def parse_time(text: str) -> datetime:
    assert TIME_PATTERN.match(text), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parses_as_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("generator", GENERATORS)
def test_same_seed_and_start_give_identical_records(generator):
    first = take(generator, MIXED, 3000)
    second = take(generator, MIXED, 3000)
    assert [(r.key, r.value, r.kind, r.event_id, r.event_time) for r in first] == \
           [(r.key, r.value, r.kind, r.event_id, r.event_time) for r in second]


@pytest.mark.parametrize("generator", GENERATORS)
def test_different_seed_gives_different_records(generator):
    base = take(generator, MIXED, 500)
    other = take(generator, GeneratorOptions(seed=8, late_fraction=0.1, duplicate_fraction=0.1,
                                             malformed_fraction=0.1), 500)
    assert [r.value for r in base] != [r.value for r in other]
    assert [r.key for r in base] != [r.key for r in other]
    # not merely shifted: the event ids of the two runs do not overlap at all
    assert not {r.event_id for r in base if r.event_id} & {r.event_id for r in other if r.event_id}


def test_start_time_moves_event_times_only():
    later = START + timedelta(hours=1)
    base = take("payments", GeneratorOptions(seed=1), 50)
    shifted = take("payments", GeneratorOptions(seed=1), 50, start=later)
    assert [r.key for r in base] == [r.key for r in shifted]
    assert [r.event_id for r in base] == [r.event_id for r in shifted]
    for a, b in zip(base, shifted):
        assert b.event_time - a.event_time == timedelta(hours=1)
        assert json.loads(b.value)["event_time"] == format_time(a.event_time + timedelta(hours=1))


# --------------------------------------------------------------------------- fractions

@pytest.mark.parametrize("generator", GENERATORS)
def test_fractions_are_roughly_respected(generator):
    options = GeneratorOptions(seed=42, late_fraction=0.15, duplicate_fraction=0.10, malformed_fraction=0.05)
    count = 20_000
    kinds = Counter(r.kind for r in take(generator, options, count))
    assert set(kinds) == {"valid", "late", "duplicate", "malformed"}
    share = {kind: n / count for kind, n in kinds.items()}
    # binomial standard deviation is <= 0.0033 here; 0.015 is a wide, non-flaky margin
    assert share["late"] == pytest.approx(0.15, abs=0.015)
    assert share["duplicate"] == pytest.approx(0.10, abs=0.015)
    assert share["malformed"] == pytest.approx(0.05, abs=0.015)
    assert share["valid"] == pytest.approx(0.70, abs=0.015)


@pytest.mark.parametrize("generator", GENERATORS)
def test_default_options_give_only_valid_records(generator):
    records = take(generator, GeneratorOptions(seed=5), 2000)
    assert {r.kind for r in records} == {"valid"}
    assert len({r.event_id for r in records}) == 2000


def test_all_malformed_when_fraction_is_one():
    records = take("iot", GeneratorOptions(seed=5, malformed_fraction=1.0), 300)
    assert {r.kind for r in records} == {"malformed"}
    assert all(r.event_id is None and r.event_time is None for r in records)


# --------------------------------------------------------------------------- kinds

@pytest.mark.parametrize("generator", GENERATORS)
def test_duplicates_repeat_an_earlier_valid_or_late_record(generator):
    records = take(generator, GeneratorOptions(seed=3, late_fraction=0.2, duplicate_fraction=0.3,
                                               malformed_fraction=0.1), 5000)
    originals: dict[str, GeneratedRecord] = {}
    duplicates = 0
    for record in records:
        if record.kind in ("valid", "late"):
            assert record.event_id not in originals, "fresh events get fresh ids"
            originals[record.event_id] = record
        elif record.kind == "duplicate":
            duplicates += 1
            original = originals.get(record.event_id)
            assert original is not None, "a duplicate repeats an event seen *earlier* in the stream"
            assert (record.key, record.value) == (original.key, original.value)
            assert record.event_time == original.event_time
            assert json.loads(record.value)["event_id"] == record.event_id
    assert duplicates > 1000
    # duplicates of late events exist too, not only of valid ones
    assert any(r.kind == "duplicate" and originals[r.event_id].kind == "late" for r in records)


def test_first_record_is_never_a_duplicate():
    # with nothing in the history yet a "duplicate" roll falls back to a fresh event
    record = take("payments", GeneratorOptions(seed=0, duplicate_fraction=1.0), 1)[0]
    assert record.kind == "valid"
    later = take("payments", GeneratorOptions(seed=0, duplicate_fraction=1.0), 50)[1:]
    assert {r.kind for r in later} == {"duplicate"}
    assert {r.value for r in later} == {record.value}


@pytest.mark.parametrize("generator", GENERATORS)
def test_late_records_lie_minutes_before_the_fresh_event_time(generator):
    options = GeneratorOptions(seed=9, late_fraction=0.3, late_min_seconds=120.0, late_max_seconds=240.0)
    events_per_second = 50.0
    records = take(generator, options, 4000, events_per_second=events_per_second)
    step = timedelta(seconds=1 / events_per_second)
    lags = []
    for i, record in enumerate(records):
        fresh = START + i * step
        payload_time = parse_time(json.loads(record.value)["event_time"])
        # the payload carries the record's event time truncated to milliseconds
        assert timedelta(0) <= record.event_time - payload_time < timedelta(milliseconds=1)
        if record.kind == "valid":
            assert record.event_time == fresh
        else:
            assert record.kind == "late"
            lag = (fresh - record.event_time).total_seconds()
            assert 120.0 <= lag <= 240.0
            lags.append(lag)
    assert len(lags) == pytest.approx(1200, rel=0.1)
    # spread over the whole range, not pinned to one end
    assert min(lags) < 130 and max(lags) > 230


@pytest.mark.parametrize("generator", GENERATORS)
def test_malformed_records_cannot_pass_validation(generator):
    records = take(generator, GeneratorOptions(seed=4, malformed_fraction=0.5), 3000)
    styles = Counter()
    numeric = NUMERIC_FIELD[generator]
    for record in records:
        if record.kind != "malformed":
            continue
        assert record.event_id is None and record.event_time is None
        assert KEY_PATTERN[generator].match(record.key.decode())
        try:
            payload = json.loads(record.value)
        except ValueError:
            styles["truncated"] += 1
            continue
        assert isinstance(payload, dict)
        assert payload[KEY_FIELD[generator]] == record.key.decode()
        if "event_id" not in payload or "event_time" not in payload:
            assert not ("event_id" not in payload and "event_time" not in payload), "exactly one field is dropped"
            styles["missing_field"] += 1
        else:
            value = payload[numeric]
            assert isinstance(value, str) and not parses_as_float(value), payload
            styles["wrong_type"] += 1
    assert set(styles) == {"truncated", "wrong_type", "missing_field"}
    assert sum(styles.values()) == pytest.approx(1500, rel=0.1)
    assert min(styles.values()) > 350


# --------------------------------------------------------------------------- payload shape

@pytest.mark.parametrize("generator", GENERATORS)
def test_valid_payloads_match_the_reference_schema(generator):
    schema = reference_schema(generator)
    records = take(generator, GeneratorOptions(seed=12, late_fraction=0.2, duplicate_fraction=0.1), 2000)
    key_field = KEY_FIELD[generator]
    for record in records:
        payload = json.loads(record.value)
        assert list(payload) == list(schema), "exactly the reference fields, in schema order"
        assert record.key == payload[key_field].encode()
        assert KEY_PATTERN[generator].match(payload[key_field])
        event_id = uuid.UUID(payload["event_id"])
        assert event_id.version == 4 and str(event_id) == payload["event_id"] == record.event_id
        assert TIME_PATTERN.match(payload["event_time"])
        assert payload["event_time"] == format_time(record.event_time)
        for name, spec in schema.items():
            kind = spec["type"]
            if kind in ("string", "timestamp"):
                assert isinstance(payload[name], str), (name, payload)
            else:
                assert kind == "double" or kind.startswith("decimal"), kind
                assert is_number(payload[name]), (name, payload)
            if "allowed" in spec:
                assert payload[name] in spec["allowed"], (name, payload)
            if "min" in spec:
                assert payload[name] >= spec["min"]
            if "max" in spec:
                assert payload[name] <= spec["max"]


def test_payments_payload_values():
    payloads = [json.loads(r.value) for r in take("payments", GeneratorOptions(seed=21), 3000)]
    for p in payloads:
        assert re.match(r"^m-\d{5}$", p["merchant_id"])
        assert COUNTRIES[p["country"]] == p["currency"]
        assert 0 < p["amount"] <= 50_000.0
        assert round(p["amount"], 2) == p["amount"]
    # many cards, most of them in their home country
    assert len({p["card_id"] for p in payloads}) > 800
    assert len({p["country"] for p in payloads}) == len(COUNTRIES)


def test_iot_payload_values():
    payloads = [json.loads(r.value) for r in take("iot", GeneratorOptions(seed=21), 4000)]
    by_sensor: dict[str, list[float]] = {}
    for p in payloads:
        by_sensor.setdefault(p["sensor"], []).append(p["value"])
    assert set(by_sensor) == {"temperature", "humidity", "pressure", "vibration"}
    means = {s: sum(v) / len(v) for s, v in by_sensor.items()}
    assert means["temperature"] == pytest.approx(21.0, abs=1.0)
    assert means["humidity"] == pytest.approx(45.0, abs=3.0)
    assert means["pressure"] == pytest.approx(1013.0, abs=2.0)
    assert means["vibration"] == pytest.approx(0.3, abs=0.05)
    assert len({p["device_id"] for p in payloads}) > 180


def test_format_time():
    assert format_time(START) == "2026-11-21T16:00:00.000Z"
    assert format_time(START.replace(microsecond=999_999)) == "2026-11-21T16:00:00.999Z"  # truncated, not rounded
    assert format_time(START.replace(microsecond=1_500)) == "2026-11-21T16:00:00.001Z"
    assert format_time(START.astimezone(timezone(timedelta(hours=-7)))) == "2026-11-21T16:00:00.000Z"
    assert format_time(datetime(1999, 12, 31, 23, 59, 59, 500, tzinfo=timezone(timedelta(hours=1)))) \
        == "1999-12-31T22:59:59.000Z"
    assert format_time(datetime(2024, 1, 1, 0, 30, 0, 123_456, tzinfo=timezone(timedelta(hours=5, minutes=30)))) \
        == "2023-12-31T19:00:00.123Z"


# --------------------------------------------------------------------------- options

@pytest.mark.parametrize("kwargs", [
    {"late_fraction": -0.1},
    {"duplicate_fraction": 1.5},
    {"malformed_fraction": -0.01},
    {"late_fraction": 0.5, "duplicate_fraction": 0.4, "malformed_fraction": 0.2},
    {"late_min_seconds": 0.0},
    {"late_min_seconds": -5.0, "late_max_seconds": 10.0},
    {"late_min_seconds": 300.0, "late_max_seconds": 200.0},
])
def test_invalid_options_raise(kwargs):
    with pytest.raises(ValueError):
        GeneratorOptions(**kwargs)


def test_boundary_options_are_accepted():
    GeneratorOptions(late_fraction=0.5, duplicate_fraction=0.25, malformed_fraction=0.25)
    GeneratorOptions(late_min_seconds=60.0, late_max_seconds=60.0)


def test_unknown_generator_raises():
    with pytest.raises(ValueError, match="unknown generator 'clicks'"):
        make_stream("clicks", GeneratorOptions())


# --------------------------------------------------------------------------- pinned output
# Recorded from the generator before it was optimised: the bytes for a seed must never change,
# since replays and tests elsewhere rely on regenerating exactly the same topic contents.

def _digest(records) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(r.key + b"\x00" + r.value + b"\x00" + r.kind.encode() + b"\x00"
                 + (r.event_id or "-").encode() + b"\x00"
                 + (r.event_time.isoformat() if r.event_time else "-").encode() + b"\n")
    return h.hexdigest()


IST = timezone(timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(("generator", "options", "start", "events_per_second", "count", "expected"), [
    ("payments", MIXED, START, 1000.0, 5000, "179954b81a064f318e0d136366f43ed9acf81603fd53be6e9459bce695ac35f5"),
    ("iot", MIXED, START, 1000.0, 5000, "178cb787bfc562d80365f5dc14e447d9db3b11d45989cb1ca69ee2f6a9fa2e2f"),
    ("payments", GeneratorOptions(seed=3, late_fraction=0.2, malformed_fraction=0.2),
     START.astimezone(IST) + timedelta(microseconds=987654), 3.0, 2000,
     "af11dad65cac97623f9ce0207a91f330e08c9f845ee89c1338c872e81de130c6"),
    ("iot", GeneratorOptions(seed=11), START, 7.0, 2000,
     "f452aa1eada0cf27bc876fdda810a708571120dcca885117a9113c8952ec65ac"),
], ids=["payments-mixed", "iot-mixed", "payments-ist-3eps", "iot-clean-7eps"])
def test_output_digest_is_pinned(generator, options, start, events_per_second, count, expected):
    assert _digest(make_stream(generator, options).take(count, start, events_per_second)) == expected


PINNED = {
    "payments": {
        0: (b"card-000912", "malformed", b'{"event_id":"d31615e5-b02e-45f7-9ece-cbffb659f768","card_id":"card-000912",'
                                         b'"merchant_id":"m-00113","amount":42.06,"currenc'),
        1: (b"card-000530", "valid", b'{"event_id":"f044c032-6655-49f0-8aad-acf037d7d190","card_id":"card-000530",'
                                     b'"merchant_id":"m-00183","amount":10.39,"currency":"INR","country":"IN",'
                                     b'"event_time":"2026-11-21T16:00:00.001Z"}'),
        18: (b"card-000258", "duplicate", b'{"event_id":"1ac7a46c-e566-4133-a1ed-cf3eb050864e","card_id":"card-000258",'
                                          b'"merchant_id":"m-00190","amount":30.19,"currency":"EUR","country":"NL",'
                                          b'"event_time":"2026-11-21T16:00:00.012Z"}'),
        33: (b"card-000649", "malformed", b'{"card_id":"card-000649","merchant_id":"m-00147","amount":23.45,'
                                          b'"currency":"INR","country":"IN","event_time":"2026-11-21T16:00:00.033Z"}'),
        34: (b"card-000952", "late", b'{"event_id":"41b73d54-59d4-428c-855a-e98e42db5b4b","card_id":"card-000952",'
                                     b'"merchant_id":"m-00188","amount":34.26,"currency":"INR","country":"IN",'
                                     b'"event_time":"2026-11-21T15:54:38.697Z"}'),
        67: (b"card-000119", "malformed", b'{"event_id":"e1f77a88-abd5-41ae-b047-2ec8d6db0106","card_id":"card-000119",'
                                          b'"merchant_id":"m-00135","amount":"\\u20ac12","currency":"EUR",'
                                          b'"country":"FR","event_time":"2026-11-21T16:00:00.067Z"}'),
    },
    "iot": {
        0: (b"dev-00182", "malformed", b'{"event_id":"63771407-e8e7-4789-9eb2-0109a91c2439","device_id":"dev-00182",'
                                       b'"sensor":"pressure","value":1007.4859}'),
        1: (b"dev-00118", "malformed", b'{"device_id":"dev-00118","sensor":"vibration","value":0.3835,'
                                       b'"event_time":"2026-11-21T16:00:00.001Z"}'),
        2: (b"dev-00038", "valid", b'{"event_id":"070d7109-2085-4634-be3c-9c8f2b855c1f","device_id":"dev-00038",'
                                   b'"sensor":"vibration","value":0.2824,"event_time":"2026-11-21T16:00:00.002Z"}'),
        6: (b"dev-00066", "late", b'{"event_id":"53740902-9620-4f0d-8380-84a03d93fd4c","device_id":"dev-00066",'
                                  b'"sensor":"vibration","value":0.3859,"event_time":"2026-11-21T15:54:56.960Z"}'),
        15: (b"dev-00036", "duplicate", b'{"event_id":"2c1eea1f-2659-44a7-8c96-6f46c6aa7d55","device_id":"dev-00036",'
                                        b'"sensor":"vibration","value":0.212,"event_time":"2026-11-21T16:00:00.009Z"}'),
        36: (b"dev-00189", "malformed", b'{"event_id":"a01d616f-121a-43e6-83a6-3966213bca7f","device_id":"dev-00189",'
                                        b'"sensor":"temperature","value":"n/a","event_time":"2026-11-21T16:00:00.036Z"}'),
    },
}


@pytest.mark.parametrize("generator", GENERATORS)
def test_pinned_records(generator):
    records = take(generator, MIXED, 100)
    for index, (key, kind, value) in PINNED[generator].items():
        record = records[index]
        assert (record.key, record.kind, record.value) == (key, kind, value), index
    late_index, late_time = PINNED_LATE[generator]
    assert records[late_index].event_time == late_time


PINNED_LATE = {
    "payments": (34, datetime(2026, 11, 21, 15, 54, 38, 697360, tzinfo=timezone.utc)),
    "iot": (6, datetime(2026, 11, 21, 15, 54, 56, 960006, tzinfo=timezone.utc)),
}


# --------------------------------------------------------------------------- fast paths == reference forms
# The generator's hot paths avoid strftime, uuid.UUID, json.dumps and the dataclass __init__;
# each must give exactly what the straightforward form gives.

def _reference_format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_format_time_matches_strftime_form():
    import random

    rng = random.Random(99)
    moments = [START + timedelta(microseconds=rng.randrange(10**6)) for _ in range(50)]
    moments += [START + timedelta(milliseconds=i * 7) for i in range(500)]  # runs within and across seconds
    for _ in range(300):  # fresh and late events interleaved, as the stream produces them
        fresh = START + timedelta(seconds=rng.uniform(0, 30))
        moments += [fresh, fresh - timedelta(seconds=rng.uniform(180, 600)), fresh + timedelta(microseconds=1)]
    moments += [
        datetime(999, 5, 6, 7, 8, 9, 10_000, tzinfo=timezone.utc),  # strftime does not zero-pad years < 1000
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc),  # no "next second" to cache up to
        datetime(2026, 3, 29, 1, 30, 0, 250_000, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
        datetime(2026, 3, 29, 1, 30, 0, 250_000),  # naive: local time, as astimezone() reads it
        START.replace(microsecond=999_999), START.replace(microsecond=999_999) + timedelta(microseconds=1),
    ]
    for moment in moments:
        assert format_time(moment) == _reference_format_time(moment), moment


def test_event_ids_match_uuid4_from_the_same_bits():
    import random

    stream = make_stream("iot", GeneratorOptions(seed=1))
    stream.rng = random.Random(5)
    twin = random.Random(5)
    for _ in range(2000):
        assert stream._event_id() == str(uuid.UUID(int=twin.getrandbits(128), version=4))


def test_encoding_matches_json_dumps():
    stream = make_stream("payments", GeneratorOptions(seed=1))
    payloads = [
        {"event_id": "x", "amount": 12.5, "n": 3, "big": 10**20, "neg": -0.0, "none": None, "flag": True,
         "event_time": START + timedelta(microseconds=123_456)},
        {"text": "€12 \"quoted\" \\ back\nslash \u2028 \x00 é", "nested": {"list": [1, 2.25, "a", False]}},
        {"tiny": 1e-300, "huge": 1.7976931348623157e308, "round": round(0.1 + 0.2, 2), "inf": float("inf")},
        {"when": datetime(2026, 1, 2, 3, 4, 5, 6_789, tzinfo=timezone(timedelta(hours=2)))},
        {},
    ]
    for payload in payloads:
        body = {k: (_reference_format_time(v) if isinstance(v, datetime) else v) for k, v in payload.items()}
        assert stream._encode(payload) == json.dumps(body, separators=(",", ":")).encode()


def test_encoding_rejects_values_json_cannot_hold():
    stream = make_stream("payments", GeneratorOptions(seed=1))
    with pytest.raises(TypeError, match="set"):
        stream._encode({"a": {1, 2}})
    with pytest.raises(TypeError, match="date"):
        stream._encode({"a": START.date()})


def test_records_are_ordinary_frozen_dataclasses():
    import dataclasses

    for record in take("payments", MIXED, 200):
        rebuilt = GeneratedRecord(record.key, record.value, record.kind, record.event_id, record.event_time)
        assert record == rebuilt and hash(record) == hash(rebuilt) and repr(record) == repr(rebuilt)
        assert dataclasses.asdict(record) == dataclasses.asdict(rebuilt)
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.kind = "valid"  # type: ignore[misc]
