"""Gold over a change stream: the shipped ``orders`` view (changes per status and operation per minute of
commit time) on real Postgres + Debezium + broker + Spark + ClickHouse, against the topic's own changes."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timezone

from kappalake.config.loader import load_pipeline
from kappalake.io.delta.stream import Trigger
from kappalake.io.kafka.admin import end_offsets
from kappalake.pipelines.runner import run_pipeline
from kappalake.generator.cdc_workload import CdcWorkload
from kappalake.runtime.context import RunContext
from tests.integration import cdc_fixtures

cdc_stack, cdc = cdc_fixtures.cdc_stack, cdc_fixtures.cdc
TOPIC = "pg.public.orders"
STATUSES = {"created", "paid", "shipped", "delivered", "cancelled"}


def settle(bootstrap: str, at_least: int, timeout: float = 120) -> None:
    """Wait until the topic holds ``at_least`` records and has stopped growing for 3 s."""
    deadline, last, since = time.time() + timeout, -1, time.time()
    while time.time() < deadline:
        total = sum(high for _, high in end_offsets(bootstrap, TOPIC).values())
        if total != last:
            last, since = total, time.time()
        elif total >= at_least and time.time() - since >= 3:
            return
        time.sleep(0.5)
    raise AssertionError(f"{TOPIC} holds {last} records, expected at least {at_least}")


def expected_counts(bootstrap: str) -> Counter:
    """(minute, status, op) -> changes, from every change event on the topic (each (LSN, key) once)."""
    from confluent_kafka import Consumer, TopicPartition

    ends = end_offsets(bootstrap, TOPIC)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "cdc-gold-check", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, p, low) for p, (low, _) in ends.items()])
    total, seen, changes = sum(h - lo for lo, h in ends.values()), 0, {}
    while seen < total:
        for message in consumer.consume(10_000, timeout=2.0):
            if message.error() is not None:
                continue
            seen += 1
            if message.value() is None:
                continue
            change = json.loads(message.value())
            change = change.get("payload", change)
            image = change["before"] if change["op"] == "d" else change["after"]
            if image["status"] not in STATUSES:  # dead-lettered by the view's events.schema
                continue
            committed = datetime.fromtimestamp(change["source"]["ts_ms"] / 1000, timezone.utc)
            minute = committed.replace(second=0, microsecond=0, tzinfo=None)
            changes[(change["source"]["lsn"], message.key())] = (minute, image["status"], change["op"])
    consumer.close()
    return Counter(changes.values())


def test_changes_per_status_and_operation_per_minute_equal_the_topic(cdc, spark, local_target, test_home, tmp_path,
                                                                     clickhouse) -> None:
    before = sum(high for _, high in end_offsets(cdc.bootstrap, TOPIC).values())
    summary = CdcWorkload(cdc.dsn, seed=21, rate=0, changes=600).run()
    order_changes = summary.changes - summary.by_kind.get("merchant_update", 0)
    settle(cdc.bootstrap, before + order_changes)
    target = local_target.model_copy(update={"storage": local_target.storage.model_copy(
        update={"root": str(tmp_path / "lake")})})
    ctx = RunContext(load_pipeline("orders", target=target.name), target, test_home)
    table = ctx.pipeline.gold.views["order_status_1m"].clickhouse.table
    clickhouse.command(f"DROP TABLE IF EXISTS `{table}`")
    clickhouse.command(f"DROP TABLE IF EXISTS `{table}_state`")

    run_pipeline(ctx, ["gold"], Trigger(available_now=True), spark=spark)

    rows = clickhouse.rows(f"SELECT window_start, status, cdc_op, changes FROM `{table}` FINAL")
    actual = Counter({(start.replace(tzinfo=None), status, op): count for start, status, op, count in rows})
    expected = expected_counts(cdc.bootstrap)
    assert sum(expected.values()) >= order_changes > 400
    assert {k: v for k, v in actual.items() if v} == dict(expected)
