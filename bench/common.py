"""Shared helpers for benchmarks: an isolated data dir with the project's jar cache, a broker, timings."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from kappalake.io.kafka.admin import end_offsets

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def bench_home() -> Iterator[Path]:
    """A throw-away KAPPALAKE_HOME sharing the jar cache of ./.kappalake (or $KAPPALAKE_CACHE)."""
    cache = os.environ.get("KAPPALAKE_CACHE") or str(REPO / ".kappalake" / "cache")
    with tempfile.TemporaryDirectory(prefix="kappalake-bench-") as home:
        os.environ.update(KAPPALAKE_HOME=home, KAPPALAKE_CACHE=cache, KAPPALAKE_CONF=str(REPO / "conf"))
        os.environ.setdefault("KAPPALAKE_PII_KEY", "bench-key")
        yield Path(home)


def raw_consume_rate(bootstrap: str, topic: str) -> tuple[int, float]:
    """Read the whole topic with confluent-kafka as fast as possible: (messages, messages/s).

    Fetch sizes are the fastest measured on the local broker: 32 MB per partition per fetch reads
    ~520k msgs/s from 2 or 3 partitions, where 10 MB read 260k (2 partitions) to 360k (3)."""
    ends = end_offsets(bootstrap, topic)
    total = sum(high - low for low, high in ends.values())
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{time.time()}",
                         "enable.auto.commit": False, "fetch.max.bytes": 104857600,
                         "max.partition.fetch.bytes": 33554432, "queued.max.messages.kbytes": 2097151})
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
    seen = 0
    started = time.perf_counter()
    while seen < total:
        for message in consumer.consume(100_000, timeout=1.0):
            if message.error() is None:
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return seen, seen / elapsed


def raw_consume_limit(bootstrap: str, topic: str, passes: int = 4) -> tuple[int, float, list[float]]:
    """The raw limit: the fastest of ``passes`` full reads of ``topic`` (messages, msgs/s, every pass's rate).

    One pass is not a limit: the first read after producing is the slowest (the broker's own JIT is
    cold), and back-to-back reads of the same topic vary by ±15% on a small machine. Spark's measured
    runs read a warm broker, so the raw side must too."""
    rates = []
    messages = 0
    for _ in range(max(1, passes)):
        messages, rate = raw_consume_rate(bootstrap, topic)
        rates.append(rate)
    return messages, max(rates), rates


def sustained_rate(progress: list[dict], skip_first: bool = False) -> tuple[int, float]:
    """Rows and rows/s over the batches of a run: first batch start to last batch end (JVM start excluded).
    With ``skip_first`` the first batch (cold JIT, first Delta commit) is left out: the steady state."""
    from datetime import datetime

    batches = [p for p in progress if int(p.get("numInputRows") or 0) > 0]
    if skip_first and len(batches) > 1:
        batches = batches[1:]
    if not batches:
        return 0, 0.0
    rows = sum(int(p["numInputRows"]) for p in batches)
    start = min(datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")) for p in batches)
    last = max(batches, key=lambda p: p["timestamp"])
    end = datetime.fromisoformat(last["timestamp"].replace("Z", "+00:00")).timestamp() + \
        last["durationMs"]["triggerExecution"] / 1000
    return rows, rows / (end - start.timestamp())


@contextmanager
def local_stack(topics: list) -> Iterator[object]:
    """The local stack of the bench's data dir, as ``kappalake stack up`` starts it: the Kafka broker with
    ``topics`` (TopicSpec) and the ClickHouse HTTP endpoint the local target's ``local-stack`` DSN names.
    Yields the broker's LocalStack; both are stopped on exit."""
    from kappalake.runtime.paths import HomeLayout
    from kappalake.runtime.stack import ClickHouseEndpoint, LocalStack

    layout = HomeLayout.from_env()
    stack, endpoint = LocalStack(layout), ClickHouseEndpoint(layout)
    stack.up(topics)
    try:
        endpoint.up()
        yield stack
    finally:
        endpoint.down()
        stack.down()
