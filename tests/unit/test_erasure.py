"""The erasure section, the record filter (pure DataFrame in/out) and the Delta log scrub."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kappalake.config.erasure import ErasureConfig, parse_subject, retention_seconds
from kappalake.config.loader import load_pipeline
from kappalake.errors import ConfigError
from kappalake.io.delta import scrub
from tests.conftest import CONF

KEY = b"unit-key"


def digest(value: str) -> str:
    return hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()


@pytest.fixture(scope="module")
def payments():
    return load_pipeline("payments", CONF, "local")


def with_erasure(pipeline, **erasure):
    data = pipeline.model_dump(by_alias=True)
    data["erasure"] = erasure
    return type(pipeline).model_validate(data)


def test_payments_configures_card_id_and_views_default_to_delete(payments) -> None:
    erasure = payments.erasure
    assert erasure.subject_fields == ["card_id"] and erasure.seen_again == "drop"
    for name, view in payments.gold.views.items():
        assert erasure.view_action(name, view.group_by) == "delete"
    assert erasure.view_action("per_merchant", ["merchant_id"]) == "keep"


@pytest.mark.parametrize(("erasure", "message"), [
    ({"subject_fields": ["nope"]}, "not declared in events.schema"),
    ({"subject_fields": ["merchant_id"]}, "must also be in silver.pii.fields"),
    ({"subject_fields": ["card_id", "card_id"]}, "twice"),
    ({"subject_fields": ["card_id"], "clickhouse": {"nope": "delete"}}, "not a gold view"),
    ({"subject_fields": ["card_id"], "seen_again": "maybe"}, "seen_again"),
    ({"subject_fields": ["card_id"], "purge_retention": "soon"}, "purge_retention"),
])
def test_bad_erasure_sections_are_refused(payments, erasure, message) -> None:
    with pytest.raises(Exception, match=message):
        with_erasure(payments, **erasure)


def test_a_binary_format_needs_the_subject_in_the_key() -> None:
    avro = load_pipeline("payments_avro", CONF, "local")
    with pytest.raises(Exception, match="must be the record key"):
        with_erasure(avro.model_copy(update={"events": avro.events.model_copy(update={"key": None})}),
                     subject_fields=["card_id"])


def test_subject_and_retention_parsing() -> None:
    assert parse_subject("card_id=card-1=x") == ("card_id", "card-1=x")
    for bad in ("card_id", "=x", "card_id="):
        with pytest.raises(ValueError, match="FIELD=VALUE"):
            parse_subject(bad)
    assert retention_seconds("0 hours") == 0 and retention_seconds("0") == 0
    assert retention_seconds("2 hours") == 7200


def test_unknown_and_unconfigured_subjects_are_clear_errors(payments, test_home, local_target) -> None:
    from kappalake.pipelines.erasure import check_subject
    from kappalake.runtime.context import RunContext

    ctx = RunContext(payments, local_target, test_home)
    with pytest.raises(ConfigError, match="has no field 'foo'"):
        check_subject(ctx, "foo")
    with pytest.raises(ConfigError, match="not a subject field"):
        check_subject(ctx, "merchant_id")
    check_subject(ctx, "card_id")
    bare = RunContext(with_erasure(payments), local_target, test_home)
    with pytest.raises(ConfigError, match="configures no data subjects"):
        check_subject(bare, "card_id")


def records(spark, rows):
    return spark.createDataFrame(rows, "key binary, value binary, offset long, kafka_timestamp timestamp")


def register(spark, rows):
    return spark.createDataFrame(rows, "subject_field string, subject_hmac string, requested_at timestamp")


def payload(card: str | None) -> bytes:
    return json.dumps({"event_id": "e", "card_id": card}).encode()


@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_drop_erased_matches_key_or_payload_and_honours_seen_again(spark, payments, policy) -> None:
    from kappalake.transforms.erasure import drop_erased

    t0, t1, t2 = datetime(2026, 1, 1, 10), datetime(2026, 1, 1, 11), datetime(2026, 1, 1, 12)
    rows = [
        (b"card-1", payload("card-1"), 0, t0),  # keyed and in the payload
        (None, payload("card-1"), 1, t0),  # no key: found in the payload
        (b"card-1", b"not json", 2, t0),  # malformed payload: found by the key
        (b"card-2", payload("card-2"), 3, t0),  # someone else
        (None, b"{}", 4, t0),  # nobody
        (b"card-1", payload("card-1"), 5, t2),  # seen again after the request
    ]
    erasure = payments.erasure.model_copy(update={"seen_again": policy})
    kept = drop_erased(records(spark, rows), register(spark, [("card_id", digest("card-1"), t1),
                                                             ("merchant_id", digest("card-2"), t1)]),
                       erasure, payments.events, KEY)
    offsets = sorted(r["offset"] for r in kept.collect())
    assert offsets == ([3, 4] if policy == "drop" else [3, 4, 5])
    assert kept.columns == ["key", "value", "offset", "kafka_timestamp"]


def test_an_empty_register_or_no_subject_fields_keep_everything(spark, payments) -> None:
    from kappalake.transforms.erasure import drop_erased

    frame = records(spark, [(b"card-1", payload("card-1"), 0, datetime(2026, 1, 1))])
    assert drop_erased(frame, register(spark, []), payments.erasure, payments.events, KEY).count() == 1
    assert drop_erased(frame, register(spark, [("card_id", digest("card-1"), datetime(2026, 1, 2))]),
                       ErasureConfig(), payments.events, KEY).count() == 1


def test_scrub_drops_statistics_naming_a_subject_and_rewrites_checkpoints(tmp_path: Path) -> None:
    secret = digest("card-1")
    log = tmp_path / "_delta_log"
    log.mkdir()
    add_hit = {"add": {"path": "a.parquet", "size": 1, "dataChange": True,
                       "stats": json.dumps({"minValues": {"card_id": secret[:32]}})}}
    add_clean = {"add": {"path": "b.parquet", "size": 1, "dataChange": True, "stats": '{"numRecords":1}'}}
    info = {"commitInfo": {"operationParameters": {"predicate": f"card_id = '{secret}'"}}}
    (log / "00000000000000000000.json").write_text("\n".join(json.dumps(a) for a in (add_hit, add_clean, info)) + "\n")
    (log / ".00000000000000000000.json.crc").write_bytes(b"old")
    (log / "00000000000000000001.json").write_text(json.dumps(add_clean) + "\n")
    pq.write_table(pa.table({"add": [{"path": "a.parquet", "stats": f'"{secret}"'}, {"path": "b", "stats": "{}"}]}),
                   log / "00000000000000000001.checkpoint.parquet")

    note = scrub.scrub_log(str(tmp_path), scrub.tokens_of([secret]))
    assert note == "2 log files rewritten"
    actions = [json.loads(line) for line in (log / "00000000000000000000.json").read_text().splitlines()]
    assert "stats" not in actions[0]["add"] and actions[0]["add"]["path"] == "a.parquet"
    assert actions[1] == add_clean
    assert actions[2]["commitInfo"]["operationParameters"]["predicate"] == "card_id = '[erased]'"
    assert not (log / ".00000000000000000000.json.crc").exists()
    checkpoint = pq.read_table(log / "00000000000000000001.checkpoint.parquet").to_pylist()
    assert checkpoint == [{"add": {"path": "a.parquet", "stats": None}}, {"add": {"path": "b", "stats": "{}"}}]
    assert scrub.scrub_log(str(tmp_path), scrub.tokens_of([secret])) == "clean"
    assert scrub.scrub_log("s3a://bucket/table", ["x"]).startswith("not scrubbed")
