"""Kafka ingestion through bronze against the real broker: restarts, rate limits, data loss,
transactions, headers. Every expectation is checked against the topic read back independently
(confluent-kafka), never against what the code under test reports about itself."""

from __future__ import annotations

import logging
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from kappalake.errors import KappalakeError
from kappalake.io.delta.stream import Trigger
from kappalake.io.kafka.admin import TopicSpec, end_offsets, ensure_topics
from kappalake.io.kafka.producer import EventProducer
from kappalake.ops.runinfo import read_run_record
from kappalake.pipelines.runner import run_pipeline
from tests.integration.kafka_helpers import consume_all

DRAIN = Trigger(available_now=True)


def _create(bootstrap: str, topic: str, partitions: int) -> None:
    assert ensure_topics(bootstrap, [TopicSpec(topic, partitions)]) == [topic]


def _send(bootstrap: str, topic: str, values: range, partition: int | None = None) -> None:
    """Plain records ``v<i>`` keyed ``k<i % 37>``; to ``partition`` when given."""
    if partition is None:
        producer = EventProducer(bootstrap)
        for i in values:
            producer.send(topic, f"k{i % 37}".encode(), f"v{i}".encode())
        assert producer.flush().failed == 0
        return
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i in values:
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=partition)
    assert producer.flush(30) == 0


def _bronze(spark, ctx) -> list:
    return (spark.read.format("delta").load(ctx.table_path("bronze"))
            .select("topic", "partition", "offset", "key", "value", "headers").collect())


def _run(spark, ctx):
    return run_pipeline(ctx, ["bronze"], DRAIN, spark=spark)


def _rows_in(result, ctx) -> int:
    return result.totals[f"{ctx.pipeline.name}.bronze"].input_rows


# --------------------------------------------------------------------------------------- restart

def test_restart_continues_exactly_after_the_last_committed_batch(spark, make_context, topic_name, bootstrap) -> None:
    ctx = make_context("payments", topic_name, 3)
    _create(bootstrap, topic_name, 3)
    _send(bootstrap, topic_name, range(0, 600))
    assert _rows_in(_run(spark, ctx), ctx) == 600

    _send(bootstrap, topic_name, range(600, 1000))
    again = _run(spark, ctx)
    assert _rows_in(again, ctx) == 400  # only what arrived after the committed batch

    rows = _bronze(spark, ctx)
    coordinates = [(r["topic"], r["partition"], r["offset"]) for r in rows]
    assert len(coordinates) == len(set(coordinates)) == 1000  # no duplicate
    kafka = {(topic_name, p, o): (k, v) for p, o, k, v in consume_all(bootstrap, topic_name)}
    assert len(kafka) == 1000
    assert set(coordinates) == set(kafka)  # no missing, nothing extra
    assert {(r["topic"], r["partition"], r["offset"]): (bytes(r["key"]), bytes(r["value"])) for r in rows} == kafka
    assert sorted(bytes(v).decode() for _, v in kafka.values()) == sorted(f"v{i}" for i in range(1000))


# ------------------------------------------------------------------------------- batch size bound

def test_max_offsets_per_trigger_bounds_every_batch(spark, make_context, topic_name, bootstrap) -> None:
    from delta.tables import DeltaTable

    ctx = make_context("payments", topic_name, 2, maxOffsetsPerTrigger="100")
    _create(bootstrap, topic_name, 2)
    _send(bootstrap, topic_name, range(1000))

    result = _run(spark, ctx)
    totals = result.totals[f"{ctx.pipeline.name}.bronze"]
    assert totals.input_rows == 1000
    assert totals.batches >= 10

    history = DeltaTable.forPath(spark, ctx.table_path("bronze")).history().collect()
    per_batch = [int(h["operationMetrics"]["numOutputRows"]) for h in history if h["operation"] == "STREAMING UPDATE"]
    assert len(per_batch) == totals.batches
    assert max(per_batch) <= 100
    assert sum(per_batch) == 1000
    assert len({(r["partition"], r["offset"]) for r in _bronze(spark, ctx)}) == 1000


# ------------------------------------------------------------------------------------- data loss

def _lose_unread_records(spark, ctx, bootstrap: str, topic: str) -> None:
    """Partition 0: offsets 0-19 read by bronze, then 20-99 produced and 20-69 deleted before any run read
    them. Partition 1: offsets 0-29, all readable."""
    _create(bootstrap, topic, 2)
    _send(bootstrap, topic, range(0, 20), partition=0)
    _send(bootstrap, topic, range(0, 10), partition=1)
    assert _rows_in(_run(spark, ctx), ctx) == 30
    _send(bootstrap, topic, range(20, 100), partition=0)
    _send(bootstrap, topic, range(10, 30), partition=1)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 70)]).values():
        assert future.result().low_watermark == 70
    assert end_offsets(bootstrap, topic) == {0: (70, 100), 1: (0, 30)}


@pytest.mark.compat
def test_records_deleted_before_they_were_read_fail_the_job_clearly(spark, make_context, topic_name,
                                                                     bootstrap) -> None:
    topic = f"payments-{topic_name}"
    ctx = make_context("payments", topic, 2)  # failOnDataLoss: true, as shipped
    assert ctx.pipeline.source.options["failOnDataLoss"] == "true"
    _lose_unread_records(spark, ctx, bootstrap, topic)

    with pytest.raises(KappalakeError) as failure:
        _run(spark, ctx)
    message = str(failure.value)
    assert f"{topic} partition 0: offsets 20-69 are no longer in Kafka (retention or DeleteRecords)" in message
    assert "failOnDataLoss" in message
    for java in ("\tat ", "org.apache", "Exception", "SQLSTATE", "STREAM_FAILED", "\n"):
        assert java not in message
    record = read_run_record(ctx.runs_dir, "bronze")
    assert record is not None and f"{topic} partition 0: offsets 20-69" in record["error"]
    assert len(_bronze(spark, ctx)) == 30  # nothing of the failed batch was committed


@pytest.mark.compat
def test_with_fail_on_data_loss_false_the_gap_is_logged_and_counted(spark, make_context, topic_name, bootstrap,
                                                                     caplog) -> None:
    ctx = make_context("payments", topic_name, 2, failOnDataLoss="false")
    _lose_unread_records(spark, ctx, bootstrap, topic_name)

    with caplog.at_level(logging.WARNING, logger="kappalake.ops.dataloss"):
        result = _run(spark, ctx)

    assert _rows_in(result, ctx) == 30 + 20  # 70-99 of partition 0, 10-29 of partition 1
    assert result.lost_offsets == {f"{ctx.pipeline.name}.bronze": 50}
    assert read_run_record(ctx.runs_dir, "bronze")["lost_offsets"] == 50
    warnings = [r.getMessage() for r in caplog.records if r.name == "kappalake.ops.dataloss"]
    assert len(warnings) == 1, warnings
    assert f"{topic_name} partition 0 offsets 20-69 (50 records)" in warnings[0]

    present = {(r["partition"], r["offset"]) for r in _bronze(spark, ctx)}
    expected = {(0, o) for o in [*range(20), *range(70, 100)]} | {(1, o) for o in range(30)}
    assert present == expected
    assert {(p, o) for p, o, _, _ in consume_all(bootstrap, topic_name)} <= present

    # The gap is counted once: a later run over the same checkpoint finds nothing new lost.
    _send(bootstrap, topic_name, range(100, 110), partition=0)
    later = _run(spark, ctx)
    assert _rows_in(later, ctx) == 10 and later.lost_offsets == {f"{ctx.pipeline.name}.bronze": 0}
    assert read_run_record(ctx.runs_dir, "bronze")["lost_offsets"] == 0


# ---------------------------------------------------------------------------------- transactions

def _transaction(producer: Producer, topic: str, values: list[str], commit: bool) -> None:
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, key=b"tx", value=value.encode(), partition=0)
    producer.flush(30)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


def _transactional_producer(bootstrap: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions(30)
    return producer


def _read_uncommitted(bootstrap: str, topic: str) -> list[str]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{topic}",
                         "isolation.level": "read_uncommitted", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values = [m.value().decode() for m in consumer.consume(100, timeout=5) if not m.error()]
    consumer.close()
    return values


COMMITTED_A = [f"committed-a{i}" for i in range(5)]
ABORTED = [f"aborted-{i}" for i in range(4)]
COMMITTED_B = [f"committed-b{i}" for i in range(6)]
# offsets: 0-4 a, 5 commit marker, 6-9 aborted, 10 abort marker, 11-16 b, 17 commit marker
B_OFFSETS = list(range(11, 17))


def test_read_committed_keeps_only_committed_transactions(spark, make_context, topic_name, bootstrap) -> None:
    ctx = make_context("payments", topic_name, 1)
    assert ctx.pipeline.source.options["kafka.isolation.level"] == "read_committed"  # as shipped
    assert ctx.pipeline.source.options["failOnDataLoss"] == "true"
    _create(bootstrap, topic_name, 1)
    producer = _transactional_producer(bootstrap)
    _transaction(producer, topic_name, COMMITTED_A, commit=True)
    _transaction(producer, topic_name, ABORTED, commit=False)
    _transaction(producer, topic_name, COMMITTED_B, commit=True)
    assert _read_uncommitted(bootstrap, topic_name) == COMMITTED_A + ABORTED + COMMITTED_B  # all in the log
    assert end_offsets(bootstrap, topic_name) == {0: (0, 18)}

    assert _rows_in(_run(spark, ctx), ctx) == 11
    rows = sorted(_bronze(spark, ctx), key=lambda r: r["offset"])
    assert [bytes(r["value"]).decode() for r in rows] == COMMITTED_A + COMMITTED_B
    assert [r["offset"] for r in rows] == [*range(5), *B_OFFSETS]


def test_transaction_gaps_are_not_counted_as_lost(spark, make_context, topic_name, bootstrap, caplog) -> None:
    """With failOnDataLoss=false the loss check runs on every batch: a restarted batch over an aborted
    transaction and control records skips offsets, none of them lost."""
    ctx = make_context("payments", topic_name, 1, failOnDataLoss="false")
    _create(bootstrap, topic_name, 1)
    producer = _transactional_producer(bootstrap)
    _transaction(producer, topic_name, COMMITTED_A, commit=True)
    assert _rows_in(_run(spark, ctx), ctx) == 5
    _transaction(producer, topic_name, ABORTED, commit=False)
    _transaction(producer, topic_name, COMMITTED_B, commit=True)

    with caplog.at_level(logging.WARNING, logger="kappalake.ops.dataloss"):
        result = _run(spark, ctx)
    assert _rows_in(result, ctx) == 6  # batch 1 spans offsets 5-17 (13 offsets) and reads 6 records
    assert result.lost_offsets == {f"{ctx.pipeline.name}.bronze": 0}
    assert read_run_record(ctx.runs_dir, "bronze")["lost_offsets"] == 0
    assert not [r for r in caplog.records if r.name == "kappalake.ops.dataloss"]
    rows = sorted(_bronze(spark, ctx), key=lambda r: r["offset"])
    assert [bytes(r["value"]).decode() for r in rows] == COMMITTED_A + COMMITTED_B


# --------------------------------------------------------------------------------------- headers

HEADERS = [
    [("trace-id", b"4bf92f3577b34da6a3ce929d0e0e4736"), ("bin", bytes(range(256))), ("dup", b"1"),
     ("dup", b"2"), ("empty", b"")],
    [("schema-\u00e9\u00e8", "v\u00e4rde-\u2603".encode()), ("nul", b"\x00\x00\xff")],
    None,
    [("tombstone-header", None)],
]


def test_headers_arrive_byte_exact(spark, make_context, topic_name, bootstrap) -> None:
    ctx = make_context("payments", topic_name, 1)
    _create(bootstrap, topic_name, 1)
    producer = EventProducer(bootstrap)
    for i, headers in enumerate(HEADERS):
        producer.send(topic_name, f"k{i}".encode(), f"v{i}".encode(), headers=headers)
    assert producer.flush().failed == 0

    assert _rows_in(_run(spark, ctx), ctx) == len(HEADERS)

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{topic_name}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic_name, 0, 0)])
    in_kafka = {m.offset(): m.headers() for m in consumer.consume(len(HEADERS), timeout=10) if not m.error()}
    consumer.close()
    assert in_kafka == {i: h for i, h in enumerate(HEADERS)}  # what the broker holds, read independently

    bronze = {r["offset"]: r["headers"] for r in _bronze(spark, ctx)}
    assert set(bronze) == set(in_kafka)
    for offset, headers in in_kafka.items():
        got = bronze[offset]
        if headers is None:
            assert got is None  # Spark's Kafka source: no headers -> null, not an empty array
            continue
        assert [(h["key"], None if h["value"] is None else bytes(h["value"])) for h in got] == headers
