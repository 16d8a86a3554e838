"""The event generator against the real broker: counts by kind, determinism, keys."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone

from kappalake.generator import GeneratorOptions
from kappalake.pipelines.produce import produce
from tests.integration.kafka_helpers import consume_all

START = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
OPTIONS = GeneratorOptions(seed=42, late_fraction=0.05, duplicate_fraction=0.05, malformed_fraction=0.03)


def classify(records: list[tuple[int, int, bytes | None, bytes]], numeric_field: str) -> Counter[str]:
    """Sort records into kinds from their bytes alone, independently of the generator."""
    kinds: Counter[str] = Counter()
    seen_ids: set[str] = set()
    max_time = ""
    for _, _, _, value in sorted(records, key=lambda r: r[1]):
        try:
            payload = json.loads(value)
        except ValueError:
            kinds["malformed"] += 1
            continue
        if ("event_id" not in payload or "event_time" not in payload
                or not isinstance(payload.get(numeric_field), (int, float))):
            kinds["malformed"] += 1
            continue
        if payload["event_id"] in seen_ids:
            kinds["duplicate"] += 1
            continue
        seen_ids.add(payload["event_id"])
        kinds["fresh"] += 1
    del max_time
    return kinds


def test_counts_by_kind_match_the_summary(make_context, topic_name, bootstrap) -> None:
    ctx = make_context("payments", topic_name)
    summary = produce(ctx, events=5000, options=OPTIONS, start_time=START)
    assert summary.sent == 5000 and sum(summary.by_kind.values()) == 5000
    assert summary.by_kind["malformed"] > 0 and summary.by_kind["duplicate"] > 0 and summary.by_kind["late"] > 0

    records = consume_all(bootstrap, topic_name)
    assert len(records) == 5000
    kinds = classify(records, "amount")
    assert kinds["malformed"] == summary.by_kind["malformed"]
    assert kinds["duplicate"] == summary.by_kind["duplicate"]
    assert kinds["fresh"] == summary.by_kind["valid"] + summary.by_kind["late"]

    # keyed by card: one card's records all land in one partition, and the key is the card id
    partitions_by_key: dict[bytes, set[int]] = {}
    for partition, _, key, value in records:
        partitions_by_key.setdefault(key or b"", set()).add(partition)
        try:
            assert json.loads(value)["card_id"].encode() == key
        except (ValueError, KeyError):
            pass
    assert all(len(p) == 1 for p in partitions_by_key.values())


def test_same_seed_gives_same_events(make_context, bootstrap) -> None:
    first, second = "det-a-" + OPTIONS.__class__.__name__, "det-b-" + OPTIONS.__class__.__name__
    for topic in (first, second):
        produce(make_context("iot", topic), events=2000, options=OPTIONS, start_time=START)
    a, b = consume_all(bootstrap, first), consume_all(bootstrap, second)
    assert a == b
    other = "det-c-seed"
    produce(make_context("iot", other), events=2000, options=GeneratorOptions(seed=43), start_time=START)
    assert consume_all(bootstrap, other) != a


def test_rate_mode_sends_rate_times_duration(make_context, topic_name, bootstrap) -> None:
    summary = produce(make_context("iot", topic_name), rate=200, duration=2, options=GeneratorOptions(seed=1))
    assert summary.sent == 400
    assert 1.5 <= summary.seconds <= 10
    assert len(consume_all(bootstrap, topic_name)) == 400
