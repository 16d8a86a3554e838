"""The CDC stack for integration tests: PostgreSQL + a Kafka Connect worker (Debezium) on the session broker.

Use it from a test module by binding the fixtures at module level (pytest finds them there; pyflakes-clean)::

    from tests.integration import cdc_fixtures
    cdc_stack, cdc = cdc_fixtures.cdc_stack, cdc_fixtures.cdc

``kafka_stack`` and ``test_home`` come from the conftest files.
``cdc_stack`` is session-scoped and shared: tests use their own primary keys (:func:`new_order_id`) and read
their own rows back by key (:meth:`CdcStack.changes`), never whole topics. A test that stops or kills the
worker need not restart it: the fixture's users call :meth:`CdcStack.ensure_running` (the ``cdc`` fixture
does) before they rely on it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import ConnectWorker, LocalStack, PostgresServer
from kappalake.runtime.stack.kafka_connect import TOPICS

ORDERS_TOPIC, MERCHANTS_TOPIC = "pg.public.orders", "pg.public.merchants"
assert set(TOPICS) == {ORDERS_TOPIC, MERCHANTS_TOPIC}


@dataclass
class Change:
    """One record of a Debezium topic: its key (``{"order_id": 1}``) and value (the envelope, None for a
    tombstone)."""

    partition: int
    offset: int
    key: dict[str, Any]
    value: dict[str, Any] | None

    @property
    def payload(self) -> dict[str, Any] | None:
        return self.value["payload"] if self.value is not None else None

    @property
    def op(self) -> str | None:
        """``r``, ``c``, ``u``, ``d``, or None for a tombstone."""
        return self.payload["op"] if self.payload is not None else None


@dataclass
class CdcStack:
    """The running CDC stack of the test session."""

    layout: HomeLayout
    postgres: PostgresServer
    connect: ConnectWorker
    bootstrap: str

    @property
    def dsn(self) -> str:
        """``postgresql://kappalake@127.0.0.1:<port>/kappalake`` (trust auth: no password)."""
        return self.postgres.dsn()

    @property
    def connect_url(self) -> str:
        return self.connect.url()

    def ensure_running(self) -> None:
        """Start PostgreSQL and the worker again if a test stopped or killed them (no-op when running)."""
        self.postgres.up()
        self.connect.up()

    def changes(self, topic: str, key: Callable[[dict[str, Any]], bool], until: Callable[[list[Change]], bool],
                timeout: float = 60.0) -> list[Change]:
        """The records of ``topic`` whose key matches ``key``, in offset order, read from the beginning until
        ``until(records)`` holds; AssertionError with what was seen after ``timeout``."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"cdc-test-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        seen: list[Change] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for message in consumer.consume(1000, timeout=0.5):
                    if message.error() or message.key() is None:
                        continue
                    record_key = json.loads(message.key())
                    if key(record_key):
                        value = json.loads(message.value()) if message.value() else None
                        seen.append(Change(message.partition(), message.offset(), record_key, value))
                if until(seen):
                    return sorted(seen, key=lambda c: (c.partition, c.offset))
        finally:
            consumer.close()
        raise AssertionError(f"{topic}: condition not met after {timeout:.0f} s; matching records seen: "
                             f"{[(c.op, c.payload and c.payload.get('after')) for c in seen]}")

    def order_changes(self, order_id: int, until: Callable[[list[Change]], bool],
                      timeout: float = 60.0) -> list[Change]:
        """The records of ``pg.public.orders`` for ``order_id`` (see :meth:`changes`)."""
        return self.changes(ORDERS_TOPIC, lambda k: k.get("order_id") == order_id, until, timeout)


def new_order_id() -> int:
    """A primary key no other test (or run on the same data dir) uses."""
    return int(time.time() * 1000) * 1000 + uuid.uuid4().int % 1000


@pytest.fixture(scope="session")
def cdc_stack(kafka_stack: LocalStack) -> Iterator[CdcStack]:
    """PostgreSQL and the Connect worker in the session's data dir, up once for the session; at its end the
    worker stops and the PostgreSQL cluster is stopped and deleted."""
    layout = kafka_stack.layout
    postgres, connect = PostgresServer(layout), ConnectWorker(layout)
    postgres.up()
    try:
        connect.up()
    except BaseException:
        postgres.purge()
        raise
    try:
        yield CdcStack(layout, postgres, connect, kafka_stack.bootstrap_servers())
    finally:
        connect.down()
        postgres.purge()  # the cluster may live outside the test home (see PostgresServer.cluster_dir)


@pytest.fixture
def cdc(cdc_stack: CdcStack) -> CdcStack:
    """:func:`cdc_stack`, running (restarted if an earlier test stopped it)."""
    cdc_stack.ensure_running()
    return cdc_stack
