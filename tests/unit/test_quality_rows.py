"""Quality config validation and the row-level split: every kind with passing and failing rows."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pydantic import ValidationError

from kappalake.config import load_pipeline
from kappalake.quality.config import ExpectationConfig, QualityConfig
from kappalake.quality.rows import (CARRIED, FAILED, VALID, dead_letters, flag_rows, quarantine_dead_letters,
                                    row_checks, silver_view, split_rows)
from kappalake.transforms.dead_letter import DEAD_LETTER_COLUMNS, to_dead_letter
from kappalake.transforms.parse import is_valid, parse_events
from kappalake.transforms.silver import to_silver

CONF = Path(__file__).resolve().parents[2] / "conf"
RECORD_SCHEMA = "key binary, value binary, topic string, partition int, offset long, kafka_timestamp timestamp"
AT = datetime(2026, 11, 1, tzinfo=timezone.utc)

SCHEMA = "id string, currency string, amount double, country string"
ROWS = [
    ("e1", "USD", 10.0, "DE"),   # passes everything
    ("e2", "XXX", 20.0, "FR"),   # currency not in set
    ("e3", "EUR", -5.0, "fr"),   # amount below min, country not two capitals
    (None, None, None, None),    # null id; nulls pass the other kinds
    ("e1", "GBP", 999.0, "GB"),  # duplicate id, amount above max
]


def quality(*expectations: dict) -> QualityConfig:
    return QualityConfig.model_validate({"expectations": list(expectations)})


# --------------------------------------------------------------------------- config

def test_defaults_follow_the_kind() -> None:
    cfg = quality({"name": "a", "kind": "not_null", "column": "id"},
                  {"name": "b", "kind": "unique", "column": "id"},
                  {"name": "c", "kind": "row_count", "min": 1},
                  {"name": "d", "kind": "freshness", "column": "ts", "max_lag": "15m"},
                  {"name": "e", "kind": "sql", "expression": "amount > 0"})
    assert [(e.level, e.on_fail) for e in cfg.expectations] == [
        ("row", "quarantine"), ("batch", "record"), ("batch", "record"), ("batch", "record"), ("row", "quarantine")]
    assert cfg.expectations[3].max_lag == "900 seconds" and cfg.expectations[3].max_lag_seconds == 900
    assert cfg.engine == "profile" and cfg.results_path is None


def test_a_bare_list_is_shorthand() -> None:
    cfg = QualityConfig.model_validate([{"name": "a", "kind": "not_null", "column": "id"}])
    assert [e.name for e in cfg.expectations] == ["a"]


@pytest.mark.parametrize(("spec", "message"), [
    ({"name": "rc", "kind": "row_count", "min": 1, "level": "row"}, "level must be batch"),
    ({"name": "f", "kind": "freshness", "column": "ts", "max_lag": "1h", "level": "row"}, "level must be batch"),
    ({"name": "n", "kind": "not_null", "column": "id", "on_fail": "stop"}, "on_fail 'stop' applies to batch-level"),
    ({"name": "u", "kind": "unique", "column": "id", "on_fail": "quarantine"},
     "on_fail 'quarantine' applies to row-level"),
    ({"name": "b", "kind": "between", "column": "amount"}, "needs min, max or both"),
    ({"name": "b", "kind": "between", "column": "amount", "min": 5, "max": 1}, "min (5) is greater than max (1)"),
    ({"name": "s", "kind": "in_set", "column": "currency"}, "needs values"),
    ({"name": "r", "kind": "regex", "column": "country", "pattern": "([A-Z"}, "not a valid regular expression"),
    ({"name": "n", "kind": "not_null", "column": "id", "values": ["x"]}, "unexpected values"),
    ({"name": "q", "kind": "sql"}, "needs expression"),
    ({"name": "q", "kind": "sql", "expression": "a > 1", "column": "a"}, "unexpected column"),
    ({"name": "rc", "kind": "row_count", "min": 1.5}, "whole numbers"),
    ({"name": "f", "kind": "freshness", "column": "ts"}, "needs max_lag"),
    ({"name": "f", "kind": "freshness", "column": "ts", "max_lag": "soon"}, "expected a duration"),
    ({"name": "bad name", "kind": "not_null", "column": "id"}, "pattern"),
    ({"name": "x", "kind": "median", "column": "id"}, "kind"),
    ({"name": "x", "kind": "not_null", "column": "id", "mostly": 0.9}, "Extra inputs are not permitted"),
])
def test_invalid_expectations_are_rejected(spec: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ExpectationConfig.model_validate(spec)


def test_names_must_be_unique() -> None:
    with pytest.raises(ValidationError, match="'a' is used twice"):
        quality({"name": "a", "kind": "not_null", "column": "id"}, {"name": "a", "kind": "unique", "column": "id"})


def test_referenced_columns() -> None:
    cfg = quality({"name": "a", "kind": "not_null", "column": "id"}, {"name": "c", "kind": "row_count", "max": 9})
    assert cfg.referenced_columns() == [("a", "id")]


# --------------------------------------------------------------------------- row split

@pytest.fixture(scope="module")
def df(spark):
    return spark.createDataFrame(ROWS, SCHEMA)


@pytest.mark.parametrize(("spec", "failing"), [
    ({"kind": "not_null", "column": "id"}, [3]),
    ({"kind": "in_set", "column": "currency", "values": ["USD", "EUR", "GBP"]}, [1]),
    ({"kind": "between", "column": "amount", "min": 0, "max": 100}, [2, 4]),
    ({"kind": "between", "column": "amount", "min": 0}, [2]),
    ({"kind": "regex", "column": "country", "pattern": "^[A-Z]{2}$"}, [2]),
    ({"kind": "sql", "expression": "amount * 2 < 100 AND currency <> 'XXX'"}, [1, 4]),
    ({"kind": "unique", "column": "id", "level": "row"}, [0, 4]),
])
def test_each_kind_splits_passing_and_failing_rows(spark, df, spec: dict, failing: list[int]) -> None:
    cfg = quality({"name": "rule", **spec})
    valid, quarantined = split_rows(df, cfg)
    expected_valid = spark.createDataFrame([r for i, r in enumerate(ROWS) if i not in failing], SCHEMA)
    expected_bad = spark.createDataFrame([(*r, ["rule"]) for i, r in enumerate(ROWS) if i in failing],
                                         f"{SCHEMA}, {FAILED} array<string>")
    assert_df_equality(valid, expected_valid, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(quarantined, expected_bad, ignore_row_order=True, ignore_nullable=True)


def test_failed_expectations_lists_every_failed_rule(df) -> None:
    cfg = quality({"name": "id_present", "kind": "not_null", "column": "id"},
                  {"name": "known_currency", "kind": "in_set", "column": "currency", "values": ["USD", "EUR", "GBP"]},
                  {"name": "amount_range", "kind": "between", "column": "amount", "min": 0, "max": 100},
                  {"name": "country_code", "kind": "regex", "column": "country", "pattern": "^[A-Z]{2}$"},
                  {"name": "small", "kind": "sql", "expression": "amount < 50", "on_fail": "record"})
    valid, quarantined = split_rows(df, cfg)
    assert [r["id"] for r in valid.collect()] == ["e1"]
    failed = {r["id"] or "null": r[FAILED] for r in quarantined.collect()}
    assert failed == {"e2": ["known_currency"], "e3": ["amount_range", "country_code"], "null": ["id_present"],
                      "e1": ["amount_range", "small"]}


def test_record_only_failures_stay_valid(df) -> None:
    cfg = quality({"name": "small", "kind": "sql", "expression": "amount < 50", "on_fail": "record"})
    valid, quarantined = split_rows(df, cfg)
    assert valid.count() == len(ROWS) and quarantined.count() == 0
    flagged = sorted((r["amount"] or 0.0, r[FAILED]) for r in flag_rows(df, cfg).collect())
    assert flagged == [(-5.0, []), (0.0, []), (10.0, []), (20.0, []), (999.0, ["small"])]


def test_no_row_level_expectations_keeps_every_row(df) -> None:
    cfg = quality({"name": "rc", "kind": "row_count", "min": 1})
    assert row_checks(cfg) == []
    valid, quarantined = split_rows(df, cfg)
    assert valid.count() == len(ROWS) and quarantined.count() == 0 and valid.columns == df.columns


def _records(spark, payloads: list[dict | str]):
    rows = [(f"k{i}".encode(), (p if isinstance(p, str) else json.dumps(p)).encode(), "t", i % 2, 100 + i, AT)
            for i, p in enumerate(payloads)]
    return spark.createDataFrame(rows, RECORD_SCHEMA)


def test_silver_view_is_to_silver_plus_the_record(spark) -> None:
    events = load_pipeline("iot", CONF, "local").events  # iot has a payload field named 'value'
    payload = {"event_id": "a", "device_id": "d1", "sensor": "humidity", "value": 21.5,
               "event_time": "2026-11-01T00:00:00Z"}
    parsed = parse_events(_records(spark, [payload]), events)
    view = silver_view(parsed.where(is_valid(parsed)), events)
    silver = to_silver(parsed.where(is_valid(parsed)), events)
    assert view.columns == silver.columns + list(CARRIED)
    assert_df_equality(view.drop(*CARRIED), silver)
    row = view.first()
    assert row["value"] == 21.5 and row["_dq_value"] == json.dumps(payload).encode()
    assert (row["_dq_topic"], row["_dq_partition"], row["_dq_offset"]) == ("t", 0, 100)


def test_quarantined_rows_become_dead_letters_with_original_bytes(spark) -> None:
    events = load_pipeline("payments", CONF, "local").events
    base = {"event_id": "a", "card_id": "c", "merchant_id": "m", "currency": "USD", "country": "DE",
            "event_time": "2026-11-01T00:00:00Z"}
    parsed = parse_events(_records(spark, [{**base, "amount": 5}, {**base, "event_id": "b", "amount": 700}]),
                          events)
    view = silver_view(parsed.where(is_valid(parsed)), events)
    cfg = quality({"name": "small", "kind": "between", "column": "amount", "max": 500},
                  {"name": "tiny", "kind": "sql", "expression": "amount < 10 OR currency <> 'USD'"},
                  {"name": "known", "kind": "in_set", "column": "currency", "values": ["USD"]})
    valid, quarantined = split_rows(view, cfg)
    assert [r["event_id"] for r in valid.drop(*CARRIED).collect()] == ["a"]
    dead = quarantine_dead_letters(quarantined, cfg, "payments", "3").collect()
    assert len(dead) == 1
    row = dead[0].asDict()
    assert tuple(row) == DEAD_LETTER_COLUMNS
    assert (row["key"], row["source_topic"], row["source_partition"], row["source_offset"]) == (b"k1", "t", 1, 101)
    assert json.loads(row["value"])["amount"] == 700
    assert row["error_class"] == "quality"
    assert row["failed_rules"] == ["quality:small", "quality:tiny"]
    assert row["error_message"] == ("expectation small failed: amount <= 500; "
                                    "expectation tiny failed: amount < 10 OR currency <> 'USD'")
    assert (row["pipeline"], row["pipeline_version"], row["layer"]) == ("payments", "3", "silver")


def test_dead_letters_of_a_whole_batch_in_one_pass(spark) -> None:
    from pyspark.sql import functions as F

    events = load_pipeline("payments", CONF, "local").events
    base = {"event_id": "a", "card_id": "c", "merchant_id": "m", "currency": "USD", "country": "DE",
            "event_time": "2026-11-01T00:00:00Z", "amount": 5}
    parsed = parse_events(_records(spark, [base, {**base, "event_id": "b", "amount": 700}, "{bad",
                                           {**base, "event_id": "d", "amount": 800}]), events)
    cfg = quality({"name": "small", "kind": "between", "column": "amount", "max": 500},
                  {"name": "d_is_fine", "kind": "unique", "column": "event_id", "level": "row"},
                  {"name": "watch", "kind": "sql", "expression": "event_id <> 'd'", "on_fail": "record"})
    view = silver_view(parsed, events)
    dead = {r["source_offset"]: r for r in dead_letters(view, cfg, "payments", "3").collect()}
    assert sorted(dead) == [101, 102, 103]
    parse_rejected = to_dead_letter(parsed.where(~is_valid(parsed)), "payments", "3").drop("failed_at").first()
    assert dead[102].asDict() | {"failed_at": None} == parse_rejected.asDict() | {"failed_at": None}
    assert dead[101]["failed_rules"] == ["quality:small"] and dead[101]["value"] == _records(
        spark, [base, {**base, "event_id": "b", "amount": 700}]).collect()[1]["value"]
    assert dead[103]["failed_rules"] == ["quality:small", "quality:watch"]
    valid, _ = split_rows(view.where(F.col(VALID)), cfg)
    assert [r["event_id"] for r in valid.drop(*CARRIED).collect()] == ["a"]
