"""Right to erasure end to end on the real broker, Spark, Delta and ClickHouse: forget one card after all
layers ran, purge, then no file of the lake (every version's data files, the logs and checkpoints) and no gold
table names the card or its pseudonym; every other card's rows are unchanged; backfills from the earliest
offsets do not bring it back."""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from kappalake.generator import GeneratorOptions
from kappalake.io.delta.stream import Trigger
from kappalake.ops import erasure, erasure_purge
from kappalake.pipelines.backfill import plan_backfill, run_backfill
from kappalake.pipelines.erasure import control_topic, register_path
from kappalake.pipelines.produce import produce
from kappalake.pipelines.runner import run_pipeline

KEY = "test-pii-key"
NOW = Trigger(available_now=True)
FAULTS = GeneratorOptions(seed=31, duplicate_fraction=0.05, malformed_fraction=0.05)


@pytest.fixture(autouse=True)
def pii_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAPPALAKE_PII_KEY", KEY)


class Laps:
    """Phase times on stderr (shown with -s, or when the test fails)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self, what: str) -> None:
        now = time.monotonic()
        print(f"erasure test: {what}: {now - self.last:.1f}s", file=sys.stderr)
        self.last = now


def pseudonym(value: str) -> str:
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def table(path: str) -> list[dict]:
    return DeltaTable(path).to_pyarrow_table().to_pylist()


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, bytes):
        return [value.decode("utf-8", errors="replace")]
    return [value] if isinstance(value, str) else []


def files_naming(root: Path, tokens: list[str]) -> list[str]:
    """Every file under ``root`` holding a token: Parquet files by value (they are compressed), others by bytes."""
    hits = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            text = "\n".join(s for row in pq.read_table(path).to_pylist() for s in _strings(row))
            found = any(t in text for t in tokens)
        else:
            data = path.read_bytes()
            found = any(t.encode() in data for t in tokens)
        if found:
            hits.append(str(path.relative_to(root)))
    return hits


def gold_rows(clickhouse, tables: list[str]) -> dict[str, list[tuple]]:
    return {t: sorted(clickhouse.rows(f"SELECT * EXCEPT (version, updated_at) FROM `{t}` FINAL")) for t in tables}


def without(rows: dict[str, list[tuple]], value: str) -> dict[str, list[tuple]]:
    return {t: [r for r in rs if value not in r] for t, rs in rows.items()}


def test_forget_removes_a_card_from_every_layer_and_replays_do_not_bring_it_back(
        spark, make_context, topic_name, clickhouse) -> None:
    lap = Laps()
    ctx = make_context("payments", topic_name)
    since = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    produce(ctx, events=2000, options=FAULTS, start_time=since + timedelta(minutes=1), events_per_second=20.0)
    run_pipeline(ctx, ["bronze", "silver", "gold"], NOW, spark=spark)
    lap("produce and run all layers")

    # The card with the most records, and at least one of them dead-lettered.
    bronze = table(ctx.table_path("bronze"))
    dead = table(ctx.table_path("dead_letter"))
    dead_cards = {r["key"].decode() for r in dead if r["key"]}
    counts = collections.Counter(r["key"].decode() for r in bronze if r["key"])
    card = max((c for c in counts if c in dead_cards), key=lambda c: counts[c])
    digest = pseudonym(card)
    tokens = [card, digest, digest[:32]]
    silver_before = table(ctx.table_path("silver"))
    assert any(r["card_id"] == digest for r in silver_before)
    views = {name: view.clickhouse.table for name, view in ctx.pipeline.gold.views.items()}
    gold_tables = [t for table_name in views.values() for t in (table_name, f"{table_name}_state")]
    gold_before = gold_rows(clickhouse, gold_tables)
    assert all(any(digest in r for r in rows) for rows in gold_before.values())

    # Unknown and unconfigured fields are refused with a clear message.
    with pytest.raises(Exception, match="not a subject field"):
        erasure.file_request(spark, ctx, "merchant_id", "m-00001", None)

    request = erasure.file_request(spark, ctx, "card_id", card, "test")
    assert request.new and request.subject_hmac == digest
    assert not erasure.file_request(spark, ctx, "card_id", card, "again").new  # registered once
    applied = erasure.apply_requests(spark, ctx, clickhouse)
    lap("register and delete")
    assert applied.deleted[ctx.table_path("bronze")] == counts[card]
    assert applied.deleted[ctx.table_path("dead_letter")] >= 1
    pending = erasure.status_rows(ctx)
    assert [r["pending"] for r in pending] == ["purge"]
    assert card not in json.dumps(pending, default=str)

    report = erasure_purge.purge(spark, ctx, clickhouse)
    lap("purge")
    assert {row["table"] for row in report.tables} >= {"silver", "bronze", "dead_letter"}

    lake = Path(ctx.target.storage.root)
    register = Path(register_path(ctx))
    # The register holds the pseudonym by design (it is what keeps replays from bringing the card back);
    # everything else names neither the card nor its pseudonym, the register never names the card.
    assert [f for f in files_naming(lake, tokens) if not (lake / f).is_relative_to(register)] == []
    assert files_naming(register, [card]) == []
    for t in gold_tables:
        assert clickhouse.rows(f"SELECT count() FROM `{t}` WHERE position(toString(tuple(*)), {{d:String}}) > 0 "
                               f"OR position(toString(tuple(*)), {{c:String}}) > 0", {"d": digest, "c": card}) \
            == [(0,)], t
    assert clickhouse.rows("SELECT count() FROM system.tables WHERE name LIKE 'kappalake_erasure_%'") == [(0,)]

    # Everybody else is untouched: silver rows, dead letters, bronze records and gold windows.
    silver_after = table(ctx.table_path("silver"))
    key = ("event_id",)
    assert sorted(tuple(r[k] for k in key) for r in silver_after) == sorted(
        tuple(r[k] for k in key) for r in silver_before if r["card_id"] != digest)
    assert len(table(ctx.table_path("bronze"))) == len(bronze) - counts[card]
    gold_after = gold_rows(clickhouse, gold_tables)
    assert gold_after == without(gold_before, digest)
    # Independent computation: the 1-minute view's counts per card and window from the silver rows.
    expected = collections.Counter((r["card_id"], r["event_time"].replace(second=0, microsecond=0, tzinfo=None))
                                   for r in silver_after)
    ch_counts = {(c, w.replace(tzinfo=None)): n for c, w, n in clickhouse.rows(
        f"SELECT card_id, window_start, txn_count FROM `{views['card_velocity_1m']}` FINAL")}
    assert ch_counts == dict(expected)

    lap("scan and compare")

    # Replays from the earliest offsets (Kafka still holds the card's records) leave it gone.
    for layer in ("bronze", "silver", "gold"):
        run_backfill(ctx, plan_backfill(ctx, layer, from_earliest=True, name=f"after-forget-{layer}"), spark=spark)
    assert not any(r["key"] and r["key"].decode() == card for r in table(ctx.table_path("bronze")))
    assert len(table(ctx.table_path("bronze"))) == len(bronze) - counts[card]
    assert not any(r["card_id"] == digest for r in table(ctx.table_path("silver")))
    assert len(table(ctx.table_path("silver"))) == len(silver_after)
    assert not any(card.encode() in (r["value"] or b"") for r in table(ctx.table_path("dead_letter")))
    lap("backfills")
    replayed = gold_rows(clickhouse, gold_tables)
    assert all(not any(digest in r for r in rows) for rows in replayed.values())
    assert {t: rows for t, rows in replayed.items() if not t.endswith("_state")} == \
        {t: rows for t, rows in gold_after.items() if not t.endswith("_state")}


def test_a_request_on_the_control_topic_applies_to_a_running_job_without_a_restart(
        spark, make_context, topic_name) -> None:
    from kappalake.io.kafka.producer import EventProducer

    ctx = make_context("payments", topic_name)
    produce(ctx, events=300, options=GeneratorOptions(seed=41))
    producer = EventProducer(ctx.bootstrap_servers(), ctx.kafka_options)
    state: dict = {"phase": 0}
    template: dict = {}

    def send_events(card: str, tag: str, n: int) -> list[str]:
        ids = [f"{tag}-{i}" for i in range(n)]
        for event_id in ids:
            payload = {**template, "event_id": event_id, "card_id": card}
            producer.send(topic_name, card.encode(), json.dumps(payload).encode())
        producer.flush()
        return ids

    def step(tracker) -> bool:
        silver = tracker.totals.get("payments.silver")
        if state["phase"] == 0 and silver is not None and silver.input_rows >= 300:
            record = next(r for r in table(ctx.table_path("bronze")) if r["key"])
            template.update(json.loads(record["value"]))
            state["card"] = "card-999999"  # a card of its own: only the events sent below
            producer.send(control_topic(ctx), None, json.dumps(
                {"field": "card_id", "value": state["card"], "reason": "upstream"}).encode())
            producer.send(control_topic(ctx), None, b"not a request")
            producer.flush()
            state["phase"] = 1
        elif state["phase"] == 1 and erasure.status_rows(ctx):
            state["forgotten"] = send_events(state["card"], "gone", 20)
            state["others"] = send_events("card-888888", "kept", 20)
            state["phase"] = 2
        elif state["phase"] == 2:
            ids = {r["event_id"] for r in table(ctx.table_path("silver"))}
            keys = [r["key"] for r in table(ctx.table_path("bronze"))]
            return set(state["others"]) <= ids and keys.count(b"card-888888") == 20
        return False

    run_pipeline(ctx, ["bronze", "silver"], Trigger(interval="1 second"), spark=spark, until=step, timeout=180)
    assert state["phase"] == 2, state
    requests = erasure.status_rows(ctx)
    assert [(r["source"], r["reason"], r["subject_hmac"]) for r in requests] == [
        ("topic", "upstream", pseudonym(state["card"]))]
    silver_ids = {r["event_id"] for r in table(ctx.table_path("silver"))}
    assert set(state["others"]) <= silver_ids and not set(state["forgotten"]) & silver_ids
    bronze_keys = [r["key"] for r in table(ctx.table_path("bronze"))]
    assert state["card"].encode() not in bronze_keys and bronze_keys.count(b"card-888888") == 20
