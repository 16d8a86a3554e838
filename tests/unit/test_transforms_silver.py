"""to_silver, to_dead_letter and the dedupe helpers on small DataFrames; one real streaming dedupe."""

from __future__ import annotations

import json
import os
import random
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from kappalake.config import load_pipeline
from kappalake.transforms.dead_letter import DEAD_LETTER_COLUMNS, to_dead_letter
from kappalake.transforms.parse import is_valid, parse_events
from kappalake.transforms.silver import (LINEAGE_COLUMNS, dedupe_within_watermark, latest_by_key, to_silver,
                                         with_dedupe_columns)

CONF = Path(__file__).resolve().parents[2] / "conf"
PAYMENTS = load_pipeline("payments", CONF, "local").events
IOT = load_pipeline("iot", CONF, "local").events

RECORD_SCHEMA = "key binary, value binary, topic string, partition int, offset long, kafka_timestamp timestamp"
ERRORS = "array<struct<rule:string,field:string,message:string>>"
T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
JSON_ERROR = [("json", None, "payload is not a JSON object: {bad")]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def collected(moment: datetime) -> datetime:
    """How PySpark returns a timestamp: a naive datetime in the local time zone."""
    return datetime.fromtimestamp(moment.timestamp())


@pytest.fixture
def one_shuffle_partition(spark):
    """Stateful and shuffling steps on a handful of rows run much faster on one partition."""
    saved = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "1")
    yield
    spark.conf.set("spark.sql.shuffle.partitions", saved)


# --------------------------------------------------------------------------- to_silver

def test_to_silver_gives_typed_fields_in_schema_order_then_lineage(spark) -> None:
    payload = (b'{"event_id": "e-1", "card_id": "card-1", "merchant_id": "m-1", "amount": "7", "currency": "GBP", '
               b'"country": "GB", "event_time": "2026-11-01T12:00:00.250Z", "extra": 1}')
    records = spark.createDataFrame([
        (b"card-1", payload, "payments", 2, 41, at(1)),
        (b"card-1", b"{bad", "payments", 0, 42, at(2)),
    ], RECORD_SCHEMA)
    parsed = parse_events(records, PAYMENTS)

    actual = to_silver(parsed.where(is_valid(parsed)), PAYMENTS)

    expected = spark.createDataFrame(
        [("e-1", "card-1", "m-1", Decimal("7.00"), "GBP", "GB", at(0.25), at(1), "payments", 2, 41)],
        "event_id string, card_id string, merchant_id string, amount decimal(12,2), currency string, "
        "country string, event_time timestamp, kafka_timestamp timestamp, source_topic string, "
        "source_partition int, source_offset long")
    assert tuple(actual.columns) == tuple(PAYMENTS.schema_) + LINEAGE_COLUMNS
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_iot_value_field_reaches_silver_while_dead_letters_keep_the_bytes(spark) -> None:
    """The payload field 'value' and the Kafka record's 'value' both survive, each where it belongs."""
    good = (b'{"event_id": "r-1", "device_id": "d-1", "sensor": "pressure", "value": 1013.25, '
            b'"event_time": "2026-11-01T12:00:00Z"}')
    bad = b'{"event_id": "r-2", "device_id": "d-1", "sensor": "pressure", "event_time": "2026-11-01T12:00:00Z"}'
    records = spark.createDataFrame([(b"d-1", good, "iot", 0, 1, at(1)), (b"d-1", bad, "iot", 0, 2, at(1))],
                                    RECORD_SCHEMA)
    parsed = parse_events(records, IOT).cache()

    silver = to_silver(parsed.where(is_valid(parsed)), IOT).collect()
    dead = to_dead_letter(parsed.where(~is_valid(parsed)), "iot", "1").collect()

    assert [tuple(r)[:5] for r in silver] == [("r-1", "d-1", "pressure", 1013.25, collected(T0))]
    assert [(r["value"], r["failed_rules"]) for r in dead] == [(bad, ["required:value"])]
    parsed.unpersist()


# --------------------------------------------------------------------------- to_dead_letter

def test_to_dead_letter_keeps_bytes_coordinates_and_every_reason(spark) -> None:
    two_errors = [("required", "event_id", "missing required field 'event_id'"),
                  ("type", "amount", "field 'amount': expected decimal(12,2), got free")]
    rejected = spark.createDataFrame([
        (b"card-1", b"{bad", "payments", 0, 5, at(5), None, JSON_ERROR),
        (b"card-2", b'{"amount": "free"}', "payments", 1, 6, at(6), None, two_errors),
        (b"card-2", b'{"amount": "free"}', "payments", 1, 7, at(7), None, two_errors),  # same bytes, own row
        (None, None, "payments", 2, 8, at(8), None, [("empty", None, "record has no value (tombstone)")]),
    ], f"{RECORD_SCHEMA}, event_id string, _errors {ERRORS}")
    failed_at = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)

    actual = to_dead_letter(rejected, "payments", "3", failed_at=F.lit(failed_at))

    both = "missing required field 'event_id'; field 'amount': expected decimal(12,2), got free"
    expected = spark.createDataFrame([
        (b"card-1", b"{bad", "payments", 0, 5, at(5), "json", "payload is not a JSON object: {bad", ["json"],
         "payments", "3", "silver", failed_at, None),
        (b"card-2", b'{"amount": "free"}', "payments", 1, 6, at(6), "required", both,
         ["required:event_id", "type:amount"], "payments", "3", "silver", failed_at, None),
        (b"card-2", b'{"amount": "free"}', "payments", 1, 7, at(7), "required", both,
         ["required:event_id", "type:amount"], "payments", "3", "silver", failed_at, None),
        (None, None, "payments", 2, 8, at(8), "empty", "record has no value (tombstone)", ["empty"],
         "payments", "3", "silver", failed_at, None),
    ], "key binary, value binary, source_topic string, source_partition int, source_offset long, "
       "kafka_timestamp timestamp, error_class string, error_message string, failed_rules array<string>, "
       "pipeline string, pipeline_version string, layer string, failed_at timestamp, replayed_at timestamp")
    assert tuple(actual.columns) == DEAD_LETTER_COLUMNS
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_to_dead_letter_defaults_to_now_for_failed_at(spark) -> None:
    rejected = spark.createDataFrame([(b"k", b"{bad", "payments", 0, 5, at(5), JSON_ERROR)],
                                     f"{RECORD_SCHEMA}, _errors {ERRORS}")
    before = datetime.now()
    row = to_dead_letter(rejected, "payments", "1", layer="bronze").first()
    assert row["failed_at"] >= before.replace(microsecond=0) - timedelta(seconds=1)
    assert row["replayed_at"] is None and row["layer"] == "bronze"


# --------------------------------------------------------------------------- dedupe columns

def test_with_dedupe_columns_gives_rejected_rows_their_own_ids(spark) -> None:
    parsed = spark.createDataFrame([
        ("payments", 0, 1, at(1), "e-1", at(0.5), []),
        ("payments", 0, 2, at(2), "e-1", at(0.5), []),  # a real duplicate: same id
        ("payments", 1, 1, at(3), "e-1", at(0.5), JSON_ERROR),  # rejected: never collides with the valid e-1
        ("payments", 1, 2, at(4), None, None, JSON_ERROR),  # no event time: falls back to the Kafka timestamp
        ("payments", 2, 2, at(5), None, None, JSON_ERROR),  # same offset, other partition: another id
    ], f"topic string, partition int, offset long, kafka_timestamp timestamp, event_id string, "
       f"event_time timestamp, _errors {ERRORS}")

    actual = with_dedupe_columns(parsed, "event_id", "event_time").select(
        "partition", "offset", "_dedupe_id", "_dedupe_time")

    expected = spark.createDataFrame([
        (0, 1, "e-1", at(0.5)), (0, 2, "e-1", at(0.5)), (1, 1, "rejected:payments:1:1", at(0.5)),
        (1, 2, "rejected:payments:1:2", at(4)), (2, 2, "rejected:payments:2:2", at(5)),
    ], "partition int, offset long, _dedupe_id string, _dedupe_time timestamp")
    assert_df_equality(actual, expected, ignore_nullable=True)

    by_arrival = with_dedupe_columns(parsed, "event_id", "kafka_timestamp")
    assert by_arrival.where(F.col("_dedupe_time") != F.col("kafka_timestamp")).count() == 0


# --------------------------------------------------------------------------- latest_by_key

LATEST_SCHEMA = "card_id string, seq long, source_offset long, amount int"
LATEST_ROWS = [
    ("c1", 1, 10, 1), ("c1", 3, 11, 3), ("c1", 2, 12, 2),  # highest sequence wins over the latest offset
    ("c2", 5, 3, 50), ("c2", 5, 8, 51), ("c2", 4, 9, 40),  # a sequence tie: the later offset wins
    ("c3", None, 20, 0), ("c3", 1, 4, 1),  # a null sequence never beats a real one
    ("c4", 7, 1, 7),
]


def test_latest_by_key_is_independent_of_input_order(spark, one_shuffle_partition) -> None:
    expected = spark.createDataFrame([("c1", 3, 11, 3), ("c2", 5, 8, 51), ("c3", 1, 4, 1), ("c4", 7, 1, 7)],
                                     LATEST_SCHEMA)
    for seed in (1, 2, 3):
        rows = LATEST_ROWS.copy()
        random.Random(seed).shuffle(rows)
        df = spark.createDataFrame(rows, LATEST_SCHEMA).repartition(3)

        actual = latest_by_key(df, ["card_id"], "seq")

        assert actual.columns == df.columns
        assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)


# --------------------------------------------------------------------------- streaming dedupe

STREAM_SCHEMA = (f"event_id string, event_time timestamp, topic string, partition int, offset long, "
                 f"kafka_timestamp timestamp, _errors {ERRORS}")


def _event(event_id: str | None, seconds: float | None, offset: int, rejected: bool = False) -> dict:
    iso = lambda moment: moment.isoformat().replace("+00:00", "Z")  # noqa: E731
    return {"event_id": event_id, "event_time": None if seconds is None else iso(at(seconds)), "topic": "payments",
            "partition": 0, "offset": offset, "kafka_timestamp": iso(at(offset)),
            "_errors": [{"rule": "json", "field": None, "message": "bad"}] if rejected else []}


def test_dedupe_within_watermark_across_batches(spark, tmp_path, one_shuffle_partition) -> None:
    """Spark 4.0's ``dropDuplicatesWithinWatermark`` with a 10 s delay on the event time, batch by batch.

    The watermark used by a batch is (max event time of the batches before) - 10 s. A first
    occurrence is kept in state until the watermark reaches its time + 10 s, and expired state is
    removed only *after* the batch that moves the watermark past it has been processed. Observed:

    * batch 0 (watermark 0): a@0 twice -> one a; b@20 kept; two rejected rows without an id are both
      kept (their per-record ids differ).
    * batch 1 (watermark 12:00:10): b@25 is a duplicate while b is in state -> dropped; a@8 is late
      (8 < 10) and a duplicate -> dropped (a's state, expiring at 10, is still there); c@5 is a *new*
      id that is late -> KEPT: this operator does not drop late rows (numRowsDroppedByWatermark stays
      0); d@60 kept. After the batch, a's state expires.
    * batch 2 (watermark 12:00:50): a@55 -> KEPT again (its first occurrence left the state, so the
      dedupe window is bounded); b@45 is late and b's state (expiring at 30) is already past the
      watermark, yet it is dropped as a duplicate because expiry happens after the batch; d@65 is a
      duplicate -> dropped.
    """
    source = tmp_path / "in"
    source.mkdir()
    batches = [
        [_event("a", 0, 1), _event("a", 0, 2), _event("b", 20, 3), _event(None, None, 4, True),
         _event(None, None, 5, True)],
        [_event("b", 25, 6), _event("a", 8, 7), _event("c", 5, 8), _event("d", 60, 9)],
        [_event("a", 55, 10), _event("b", 45, 11), _event("d", 65, 12)],
    ]
    now = time.time()
    for i, rows in enumerate(batches):  # one file per micro-batch, in modification-time order
        path = source / f"part-{i}.json"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        os.utime(path, (now - 300 + 60 * i,) * 2)
    outputs: dict[int, set[tuple[str, datetime]]] = {}

    def collect(batch, batch_id: int) -> None:
        outputs[batch_id] = {(r["_dedupe_id"], r["_dedupe_time"]) for r in batch.collect()}

    stream = spark.readStream.schema(STREAM_SCHEMA).option("maxFilesPerTrigger", 1).json(str(source))
    query = (dedupe_within_watermark(with_dedupe_columns(stream, "event_id", "event_time"), "10 seconds")
             .writeStream.foreachBatch(collect).option("checkpointLocation", str(tmp_path / "checkpoint"))
             .trigger(availableNow=True).start())
    assert query.awaitTermination(timeout=120) is not False, "the streaming query did not finish"
    assert query.exception() is None

    def seen(*pairs: tuple[str, float]) -> set[tuple[str, datetime]]:
        return {(event_id, collected(at(seconds))) for event_id, seconds in pairs}

    assert outputs[0] == seen(("a", 0), ("b", 20), ("rejected:payments:0:4", 4), ("rejected:payments:0:5", 5))
    assert outputs[1] == seen(("c", 5), ("d", 60))
    assert outputs[2] == seen(("a", 55))
    assert all(not rows for batch_id, rows in outputs.items() if batch_id > 2)  # at most a final no-data batch
    progress = [p for p in query.recentProgress if p["numInputRows"]]
    assert [p["eventTime"].get("watermark") for p in progress] == [
        "1970-01-01T00:00:00.000Z", "2026-11-01T12:00:10.000Z", "2026-11-01T12:00:50.000Z"]
    assert sum(op["numRowsDroppedByWatermark"] for p in progress for op in p["stateOperators"]) == 0
