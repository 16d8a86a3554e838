"""Read a topic back with confluent-kafka (independent of the code under test)."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from kappalake.io.kafka.admin import end_offsets


def consume_all(bootstrap: str, topic: str, timeout: float = 60.0) -> list[tuple[int, int, bytes | None, bytes]]:
    """Every record of ``topic`` as (partition, offset, key, value), read up to the end offsets."""
    ends = end_offsets(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{topic}", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
    remaining = {p: high - low for p, (low, high) in ends.items()}
    out: list[tuple[int, int, bytes | None, bytes]] = []
    import time

    deadline = time.monotonic() + timeout
    while any(remaining.values()) and time.monotonic() < deadline:
        for message in consumer.consume(10_000, timeout=1.0):
            if message.error():
                continue
            out.append((message.partition(), message.offset(), message.key(), message.value()))
            remaining[message.partition()] -= 1
    consumer.close()
    assert not any(remaining.values()), f"could not read all of {topic}: {remaining} left"
    return sorted(out)
