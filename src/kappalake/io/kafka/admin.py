"""Kafka admin operations: readiness, topic creation, end offsets."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kappalake.errors import BrokerUnreachableError
from kappalake.io.kafka.client import librdkafka_config


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 3


def wait_until_ready(bootstrap_servers: str, timeout: float = 60.0, options: Mapping[str, str] | None = None,
                     alive: callable | None = None) -> None:  # type: ignore[valid-type]
    """Block until the brokers answer a metadata request; raise BrokerUnreachableError after ``timeout``."""
    # log_level 2: the probe expects refused connections while the broker starts; keep them off stderr.
    admin = AdminClient(librdkafka_config(bootstrap_servers, options, **{"socket.timeout.ms": 3000, "log_level": 2}))
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BrokerUnreachableError(f"Kafka at {bootstrap_servers} exited before it answered")
        try:
            metadata = admin.list_topics(timeout=3)
            if metadata.brokers:
                return
        except KafkaException as exc:
            last_error = exc
        time.sleep(0.5)
    raise BrokerUnreachableError(
        f"Kafka at {bootstrap_servers} did not answer within {timeout:.0f}s"
        + (f" ({last_error})" if last_error else "")
    )


def ensure_topics(bootstrap_servers: str, topics: Iterable[TopicSpec],
                  options: Mapping[str, str] | None = None, timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AdminClient(librdkafka_config(bootstrap_servers, options))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise BrokerUnreachableError(f"Kafka at {bootstrap_servers} did not answer: {exc}") from None
    # One spec per name (the most partitions asked for): librdkafka crashes the process (SIGSEGV) when one
    # CreateTopics request names a topic twice, as two pipelines reading the same topic would.
    unique: dict[str, TopicSpec] = {}
    for spec in topics:
        if spec.name not in unique or spec.partitions > unique[spec.name].partitions:
            unique[spec.name] = spec
    wanted = [t for t in unique.values() if t.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics([NewTopic(t.name, num_partitions=t.partitions, replication_factor=1)
                                   for t in wanted], operation_timeout=timeout)
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerUnreachableError(f"cannot create topic {name!r} on {bootstrap_servers}: {exc}") from None
    _wait_for_leaders(admin, [t.name for t in wanted], timeout)
    return created


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout).topics
        if all(n in topics and topics[n].partitions and all(p.leader >= 0 for p in topics[n].partitions.values())
               for n in names):
            return
        time.sleep(0.2)


def end_offsets(bootstrap_servers: str, topic: str, options: Mapping[str, str] | None = None,
                timeout: float = 30.0) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` watermarks of ``topic``."""
    consumer = Consumer(librdkafka_config(bootstrap_servers, options, **{"group.id": "kappalake-admin",
                                                                          "enable.auto.commit": False}))
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise BrokerUnreachableError(f"topic {topic!r} does not exist on {bootstrap_servers}")
        return {p: _watermarks(consumer, TopicPartition(topic, p), timeout)
                for p in sorted(metadata.topics[topic].partitions)}
    finally:
        consumer.close()


def _watermarks(consumer: Consumer, partition: TopicPartition, timeout: float) -> tuple[int, int]:
    """Watermarks of one partition, retrying retriable errors (a new topic's leader is still settling:
    NOT_LEADER_FOR_PARTITION) until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = getattr(error, "retriable", lambda: False)() or "NOT_LEADER" in str(exc)
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
