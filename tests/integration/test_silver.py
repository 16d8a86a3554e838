"""Silver and the dead-letter queue against the real broker, Spark and Delta."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
from deltalake import DeltaTable

from kappalake.config.models import SilverConfig
from kappalake.generator import GeneratorOptions
from kappalake.io.delta.stream import Trigger
from kappalake.io.kafka.admin import TopicSpec, end_offsets, ensure_topics
from kappalake.io.kafka.producer import EventProducer
from kappalake.pipelines.dead_letters import list_dead_letters, replay_dead_letters
from kappalake.pipelines.produce import produce
from kappalake.pipelines.runner import run_pipeline
from kappalake.runtime.context import RunContext
from tests.integration.kafka_helpers import consume_all

START = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
KEY = "test-pii-key"
NOW = Trigger(available_now=True)


@pytest.fixture(autouse=True)
def pii_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAPPALAKE_PII_KEY", KEY)


def rows(path: str) -> list[dict]:
    return DeltaTable(path).to_pyarrow_table().to_pylist()


def table_version(path: str) -> int:
    return DeltaTable(path).version()


def expected_valid(bootstrap: str, topic: str) -> dict[str, dict]:
    """Unique valid payments by event id, computed from the topic alone."""
    unique: dict[str, dict] = {}
    for _, _, _, value in consume_all(bootstrap, topic):
        try:
            payload = json.loads(value)
        except ValueError:
            continue
        if {"event_id", "event_time", "card_id"} <= payload.keys() and isinstance(payload.get("amount"),
                                                                                  (int, float)):
            unique.setdefault(payload["event_id"], payload)
    return unique


@pytest.mark.compat
def test_bronze_silver_dead_letter_counts(spark, make_context, topic_name, bootstrap) -> None:
    ctx = make_context("payments", topic_name)
    options = GeneratorOptions(seed=11, late_fraction=0.05, duplicate_fraction=0.08, malformed_fraction=0.05)
    summary = produce(ctx, events=4000, options=options, start_time=START)

    run_pipeline(ctx, ["bronze", "silver"], NOW, spark=spark)

    assert len(rows(ctx.table_path("bronze"))) == summary.sent
    silver = rows(ctx.table_path("silver"))
    expected = expected_valid(bootstrap, topic_name)
    assert len(silver) == len(expected) == summary.by_kind["valid"] + summary.by_kind["late"]
    assert {r["event_id"] for r in silver} == set(expected)
    sample = next(r for r in silver)
    original = expected[sample["event_id"]]["card_id"]
    assert sample["card_id"] == hmac.new(KEY.encode(), original.encode(), hashlib.sha256).hexdigest()
    assert str(sample["amount"]) == f"{expected[sample['event_id']]['amount']:.2f}"

    dead = rows(ctx.table_path("dead_letter"))
    assert len(dead) == summary.by_kind["malformed"]
    assert {d["error_class"] for d in dead} <= {"json", "type", "required"}
    assert all(d["error_message"] and d["failed_rules"] and d["pipeline"] == "payments"
               and d["pipeline_version"] == "1" and d["source_topic"] == topic_name for d in dead)
    kafka = {(p, o): v for p, o, _, v in consume_all(bootstrap, topic_name)}
    assert all(kafka[(d["source_partition"], d["source_offset"])] == d["value"] for d in dead)

    record = json.loads((ctx.runs_dir / "silver" / "last-run.json").read_text())
    assert record["dead_letter_rows"] == summary.by_kind["malformed"]


def _rewind_to_first_batch(checkpoint: str) -> None:
    """Make the checkpoint forget that batch 0 (which held all the data) committed: as if the job died after
    writing to Delta and before committing the checkpoint. Later (no-data) batches are forgotten too."""
    for folder in ("commits", "offsets"):
        for entry in Path(checkpoint, folder).iterdir():
            batch = entry.name.lstrip(".").split(".")[0]
            if batch.isdigit() and (int(batch) > 0 or folder == "commits"):
                entry.unlink()


@pytest.mark.compat
def test_replayed_batch_changes_no_table(spark, make_context, topic_name) -> None:
    ctx = make_context("payments", topic_name)
    produce(ctx, events=1500, options=GeneratorOptions(seed=3, malformed_fraction=0.1, duplicate_fraction=0.1),
            start_time=START)
    run_pipeline(ctx, ["bronze", "silver"], NOW, spark=spark)
    paths = [ctx.table_path(layer) for layer in ("bronze", "silver", "dead_letter")]
    before = {p: (table_version(p), len(rows(p))) for p in paths}

    for layer in ("bronze", "silver"):
        _rewind_to_first_batch(ctx.checkpoint_path(layer))
    replay = run_pipeline(ctx, ["bronze", "silver"], NOW, spark=spark)

    assert replay.totals[f"{ctx.pipeline.name}.silver"].input_rows > 0  # the batch really ran again
    assert {p: (table_version(p), len(rows(p))) for p in paths} == before


def test_new_checkpoint_is_not_skipped(spark, make_context, topic_name) -> None:
    base = make_context("payments", topic_name)
    silver = SilverConfig(mode="upsert", merge_key=["card_id"], sequence_column="event_time",
                          pii=base.pipeline.silver.pii, watermark="10 minutes")
    ctx = RunContext(base.pipeline.model_copy(update={"silver": silver}), base.target, base.layout)
    produce(ctx, events=300, options=GeneratorOptions(seed=1), start_time=START)
    run_pipeline(ctx, ["silver"], NOW, spark=spark)
    first = {r["card_id"]: r["event_time"] for r in rows(ctx.table_path("silver"))}

    # Start over with a fresh checkpoint positioned after the old data: its batch 0 must be applied.
    shutil.rmtree(ctx.checkpoint_path("silver"))
    ends = end_offsets(ctx.bootstrap_servers(), topic_name)
    start_at = json.dumps({topic_name: {str(p): high for p, (_, high) in ends.items()}})
    later = datetime(2026, 11, 2, tzinfo=timezone.utc)
    produce(ctx, events=300, options=GeneratorOptions(seed=2), start_time=later)
    source = ctx.pipeline.source.model_copy(update={"options": {**ctx.pipeline.source.options,
                                                                "startingOffsets": start_at}})
    fresh = RunContext(ctx.pipeline.model_copy(update={"source": source}), ctx.target, ctx.layout)
    run_pipeline(fresh, ["silver"], NOW, spark=spark)

    after = {r["card_id"]: r["event_time"] for r in rows(ctx.table_path("silver"))}
    assert len(after) >= len(first)
    assert max(after.values()) >= later  # the new checkpoint's first batch was merged, not skipped
    assert all(after[card] >= first[card] for card in first)  # last write wins by sequence


def test_dead_letter_replay_round_trip(spark, make_context, topic_name) -> None:
    ctx = make_context("payments", topic_name)
    ensure_topics(ctx.bootstrap_servers(), [TopicSpec(topic_name, 1)])
    producer = EventProducer(ctx.bootstrap_servers())
    for i in range(20):
        payload = {"event_id": f"chf-{i}", "card_id": f"card-{i}", "merchant_id": "m-1", "amount": 10.5,
                   "currency": "CHF", "country": "CH", "event_time": "2026-11-01T12:00:00.000Z"}
        producer.send(topic_name, f"card-{i}".encode(), json.dumps(payload).encode())
    producer.flush()
    run_pipeline(ctx, ["silver"], NOW, spark=spark)
    assert len(rows(ctx.table_path("silver"))) == 0
    listed = list_dead_letters(ctx, where="error_class = 'allowed'").to_pylist()
    assert len(listed) == 20 and "is not one of" in listed[0]["error_message"]

    # The fix: CHF becomes an allowed currency. Replay, then the same silver job picks the records up.
    events = ctx.pipeline.events
    currency = events.schema_["currency"].model_copy(update={"allowed": [*events.schema_["currency"].allowed,
                                                                          "CHF"]})
    fixed_events = events.model_copy(update={"schema_": {**events.schema_, "currency": currency}})
    fixed = RunContext(ctx.pipeline.model_copy(update={"events": fixed_events}), ctx.target, ctx.layout)
    summary = replay_dead_letters(fixed, where="error_class = 'allowed'")
    assert (summary.selected, summary.published, summary.marked) == (20, 20, 20)
    assert replay_dead_letters(fixed, where="error_class = 'allowed'").selected == 0  # marked replayed

    run_pipeline(fixed, ["silver"], NOW, spark=spark)
    assert sorted(r["event_id"] for r in rows(ctx.table_path("silver"))) == sorted(f"chf-{i}" for i in range(20))
    dead = rows(ctx.table_path("dead_letter"))
    assert len(dead) == 20 and all(d["replayed_at"] is not None for d in dead)


def test_silver_from_bronze_matches_silver_from_kafka(spark, make_context, topic_name) -> None:
    ctx = make_context("iot", topic_name)
    produce(ctx, events=2000, options=GeneratorOptions(seed=9, duplicate_fraction=0.1, malformed_fraction=0.05),
            start_time=START)
    run_pipeline(ctx, ["silver"], NOW, spark=spark)
    from_kafka = sorted(r["event_id"] for r in rows(ctx.table_path("silver")))

    silver = ctx.pipeline.silver.model_copy(update={"source": "bronze", "path": ctx.table_path("silver") + "_b"})
    dead = ctx.pipeline.dead_letter.model_copy(update={"path": ctx.table_path("dead_letter") + "_b"})
    via_bronze = RunContext(ctx.pipeline.model_copy(update={"silver": silver, "dead_letter": dead}),
                            ctx.target, ctx.layout)
    run_pipeline(via_bronze, ["bronze"], NOW, spark=spark)
    shutil.rmtree(ctx.checkpoint_path("silver"))
    run_pipeline(via_bronze, ["silver"], NOW, spark=spark)
    assert sorted(r["event_id"] for r in rows(via_bronze.table_path("silver"))) == from_kafka
    assert len(rows(via_bronze.table_path("dead_letter"))) == len(rows(ctx.table_path("dead_letter")))


def test_pii_fields_without_key_refuse_to_start(spark, make_context, topic_name, monkeypatch) -> None:
    from kappalake.errors import ConfigError

    monkeypatch.delenv("KAPPALAKE_PII_KEY")
    ctx = make_context("payments", topic_name)
    produce(ctx, events=10, options=GeneratorOptions(seed=1), start_time=START)
    with pytest.raises(ConfigError, match="KAPPALAKE_PII_KEY"):
        run_pipeline(ctx, ["silver"], NOW, spark=spark)
    assert not os.path.exists(ctx.table_path("silver"))


def test_dead_letters_also_go_to_a_kafka_topic(spark, make_context, topic_name, bootstrap) -> None:
    base = make_context("payments", topic_name)
    dlq_topic = f"{topic_name}.dlq"
    dead_letter = base.pipeline.dead_letter.model_copy(update={"kafka_topic": dlq_topic})
    ctx = RunContext(base.pipeline.model_copy(update={"dead_letter": dead_letter}), base.target, base.layout)
    summary = produce(ctx, events=800, options=GeneratorOptions(seed=4, malformed_fraction=0.1), start_time=START)
    run_pipeline(ctx, ["silver"], NOW, spark=spark)

    dead = {(d["source_partition"], d["source_offset"]): d for d in rows(ctx.table_path("dead_letter"))}
    published = consume_all(bootstrap, dlq_topic)
    assert len(published) == len(dead) == summary.by_kind["malformed"]
    assert sorted(v for *_, v in published) == sorted(d["value"] for d in dead.values())
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dlq-headers", "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(dlq_topic, p, 0) for p in range(3)])
    message = next(m for m in iter(lambda: consumer.poll(10), None) if m is not None and not m.error())
    headers = dict(message.headers())
    consumer.close()
    assert headers["kappalake.error"] and headers["kappalake.source"].decode().startswith(f"{topic_name}/")
