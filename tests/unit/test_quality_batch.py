"""Batch-level validation (both engines), the on_fail: stop gate, results through a Delta table, the CLI."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kappalake.quality.batch import BatchValidator, QualityStop, ValidationResult, enforce, metric_counts
from kappalake.quality.config import QualityConfig
from kappalake.quality.results import (append_results, is_local, read_last_results, record_results, results_frame,
                                       write_results)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
SCHEMA = "id string, currency string, amount double, country string, ts timestamp"
ROWS = [
    ("e1", "USD", 10.0, "DE", NOW - timedelta(minutes=3)),
    ("e2", "XXX", 20.0, "FR", NOW - timedelta(minutes=2)),
    ("e3", "EUR", -5.0, "fr", NOW - timedelta(minutes=1)),
    (None, None, None, None, None),
    ("e1", "GBP", 999.0, "GB", NOW - timedelta(minutes=5)),
]
CONFIG = QualityConfig.model_validate([
    {"name": "id_present", "kind": "not_null", "column": "id"},
    {"name": "small", "kind": "sql", "expression": "amount < 500", "on_fail": "record"},
    {"name": "rows_ok", "kind": "row_count", "min": 1, "max": 10},
    {"name": "rows_too_few", "kind": "row_count", "min": 6},
    {"name": "id_unique", "kind": "unique", "column": "id"},
    {"name": "country_unique", "kind": "unique", "column": "country"},
    {"name": "fresh_ok", "kind": "freshness", "column": "ts", "max_lag": "10 minutes"},
    {"name": "fresh_stale", "kind": "freshness", "column": "ts", "max_lag": "30 seconds"},
    {"name": "currency_known", "kind": "in_set", "column": "currency", "values": ["USD", "EUR", "GBP"],
     "level": "batch"},
    {"name": "amount_sane", "kind": "sql", "expression": "amount < 1000", "level": "batch"},
    {"name": "amount_range", "kind": "between", "column": "amount", "min": 0, "level": "batch"},
    {"name": "country_code", "kind": "regex", "column": "country", "pattern": "^[A-Z]{2}$", "level": "batch"},
    {"name": "currency_present", "kind": "not_null", "column": "currency", "level": "batch"},
])
EXPECTED_SUCCESS = {
    "id_present": False, "small": False, "rows_ok": True, "rows_too_few": False, "id_unique": False,
    "country_unique": True, "fresh_ok": True, "fresh_stale": False, "currency_known": False, "amount_sane": True,
    "amount_range": False, "country_code": False, "currency_present": False,
}


@pytest.fixture(scope="module")
def batch(spark):
    return spark.createDataFrame(ROWS, SCHEMA).persist()


@pytest.fixture(scope="module", params=["profile", "gx_spark"])
def validated(request, batch) -> dict[str, ValidationResult]:
    validator = BatchValidator(CONFIG, "payments.silver", engine=request.param)
    return {r.expectation: r for r in validator.validate(batch, 7, now=NOW)}


def test_every_expectation_gets_a_verdict(validated: dict[str, ValidationResult]) -> None:
    assert {name: r.success for name, r in validated.items()} == EXPECTED_SUCCESS
    first = validated["rows_ok"]
    assert (first.suite, first.batch_id, first.validated_at, first.level, first.kind, first.on_fail) == (
        "payments.silver", 7, NOW, "batch", "row_count", "record")
    assert validated["small"].level == "row" and validated["small"].on_fail == "record"


def test_observed_values(validated: dict[str, ValidationResult]) -> None:
    observed = {name: r.observed_value for name, r in validated.items()}
    assert observed["id_present"] == "1 of 5 rows unexpected"  # row level: from the Spark profile
    assert observed["small"] == "1 of 5 rows unexpected"
    assert observed["rows_ok"] == observed["rows_too_few"] == "5 rows"
    assert observed["id_unique"].startswith("2 of ")  # both e1 rows
    assert observed["country_unique"].startswith("0 of ")
    assert observed["fresh_ok"] == "lag 60.0s (max ts 2026-11-01T11:59:00.000000Z)"
    assert observed["fresh_stale"] == observed["fresh_ok"]
    assert observed["currency_known"].startswith("1 of ")
    assert observed["amount_range"].startswith("1 of ")
    assert observed["country_code"].startswith("1 of ")
    assert observed["currency_present"] == "1 of 5 rows unexpected"


@pytest.mark.parametrize("engine", ["profile", "gx_spark"])
def test_an_empty_batch_is_not_validated(spark, engine: str) -> None:
    cfg = QualityConfig.model_validate([{"name": "rows", "kind": "row_count", "min": 1}])
    validator = BatchValidator(cfg, "s", engine=engine)
    outcome = validator.run(spark.createDataFrame([], SCHEMA), 3, now=NOW)
    assert outcome.results == [] and outcome.profile.rows == 0


def test_profile_counts_quarantined_rows(batch) -> None:
    cfg = QualityConfig.model_validate([
        {"name": "id_present", "kind": "not_null", "column": "id"},
        {"name": "positive", "kind": "between", "column": "amount", "min": 0},
        {"name": "small", "kind": "sql", "expression": "amount < 500", "on_fail": "record"},
    ])
    outcome = BatchValidator(cfg, "s").run(batch, 1, now=NOW)
    assert outcome.profile.quarantined == 2  # the null row and e3; 'small' only records
    assert metric_counts(outcome) == {"quarantined_rows": 2, "quality_checks": 3, "quality_failures": 3}


def test_where_profiles_only_the_selected_rows_and_counts_the_rest(spark) -> None:
    from pyspark.sql import functions as F

    df = spark.createDataFrame([("a", True), ("b", True), ("a", False), (None, False), ("c", False)],
                               "id string, ok boolean")
    cfg = QualityConfig.model_validate([{"name": "id_present", "kind": "not_null", "column": "id"},
                                        {"name": "id_unique", "kind": "unique", "column": "id"}])
    outcome = BatchValidator(cfg, "s").run(df, 4, now=NOW, where=F.col("ok"))
    assert (outcome.profile.rows, outcome.profile.skipped) == (2, 3)
    assert {r.expectation: (r.success, r.observed_value) for r in outcome.results} == {
        "id_present": (True, "0 of 2 rows unexpected"), "id_unique": (True, "0 of 2 rows unexpected")}
    counts_only = BatchValidator(QualityConfig(), "s").run(df, 4, where=F.col("ok"))
    assert (counts_only.profile.rows, counts_only.profile.skipped, counts_only.results) == (2, 3, [])


def test_stop_raises_naming_the_expectation_and_batch() -> None:
    cfg = QualityConfig.model_validate([
        {"name": "enough_rows", "kind": "row_count", "min": 100, "on_fail": "stop"},
        {"name": "unique_id", "kind": "unique", "column": "id"},
    ])
    results = [ValidationResult("payments.silver", "enough_rows", False, "5 rows", 42, NOW, "batch", "row_count",
                                "stop"),
               ValidationResult("payments.silver", "unique_id", False, "2 of 5 rows unexpected", 42, NOW, "batch",
                                "unique", "record")]
    with pytest.raises(QualityStop) as info:
        enforce(results, cfg)
    message = str(info.value)
    assert "enough_rows" in message and "unique_id" not in message
    assert "observed 5 rows" in message and "row count >= 100" in message
    assert "batch 42" in message and "replays this batch" in message and "fixed" in message
    enforce(results[1:], cfg)  # a failed 'record' expectation never stops
    enforce([ValidationResult("payments.silver", "enough_rows", True, "500 rows", 43, NOW, "batch")], cfg)


def test_stop_from_a_real_batch(batch) -> None:
    cfg = QualityConfig.model_validate([
        {"name": "currency_known", "kind": "in_set", "column": "currency", "values": ["USD", "EUR"],
         "level": "batch", "on_fail": "stop"}])
    results = BatchValidator(cfg, "payments.silver").validate(batch, 9, now=NOW)
    with pytest.raises(QualityStop, match="currency_known .* observed 2 of 5 rows unexpected"):
        enforce(results, cfg)


def _results(batch_id: int, at: datetime, success: bool = True) -> list[ValidationResult]:
    return [ValidationResult("payments.silver", "rows_ok", success, "5 rows", batch_id, at, "batch", "row_count",
                             "record"),
            ValidationResult("payments.silver", "id_present", True, "0 of 5 rows unexpected", batch_id, at, "row",
                             "not_null", "quarantine")]


def test_results_round_trip_through_delta(spark, tmp_path: Path) -> None:
    path = str(tmp_path / "quality_results")
    first = results_frame(spark, _results(0, NOW), "payments", "silver")
    write_results(first, path, "kappalake:payments:silver:q1", 0)
    write_results(first, path, "kappalake:payments:silver:q1", 0)  # a replayed batch adds nothing
    later = NOW + timedelta(minutes=1)
    write_results(results_frame(spark, _results(1, later, success=False), "payments", "silver"), path,
                  "kappalake:payments:silver:q1", 1)
    rows = read_last_results(path, limit=10)
    assert len(rows) == 4
    assert [r["batch_id"] for r in rows] == [1, 1, 0, 0]
    newest = next(r for r in rows if r["batch_id"] == 1 and r["expectation"] == "rows_ok")
    assert newest["success"] is False and newest["observed_value"] == "5 rows"
    assert (newest["pipeline"], newest["table"], newest["suite"], newest["kind"], newest["level"],
            newest["on_fail"]) == ("payments", "silver", "payments.silver", "row_count", "batch", "record")
    assert newest["validated_at"] == later
    assert len(read_last_results(path, limit=1)) == 1
    assert [(r["batch_id"], r["expectation"]) for r in read_last_results(path, 10, failed_only=True)] == [
        (1, "rows_ok")]


def test_delta_rs_writer_shares_the_txn_idempotency_of_spark(spark, tmp_path: Path) -> None:
    path = str(tmp_path / "quality_results")
    app = "kappalake:payments:silver:q2"
    write_results(results_frame(spark, _results(0, NOW), "payments", "silver"), path, app, 0)  # Spark creates it
    assert append_results(_results(0, NOW), path, "payments", "silver", app, 0) is False  # replay of batch 0
    assert append_results(_results(1, NOW + timedelta(minutes=1)), path, "payments", "silver", app, 1) is True
    write_results(results_frame(spark, _results(1, NOW), "payments", "silver"), path, app, 1)  # Spark skips it too
    record_results(spark, _results(2, NOW + timedelta(minutes=2)), path, "payments", "silver", app, 2)
    record_results(spark, _results(2, NOW + timedelta(minutes=2)), path, "payments", "silver", app, 2)
    record_results(spark, [], path, "payments", "silver", app, 3)
    rows = read_last_results(path, limit=20)
    assert [r["batch_id"] for r in rows] == [2, 2, 1, 1, 0, 0]
    assert rows[0]["validated_at"] == NOW + timedelta(minutes=2)
    assert spark.read.format("delta").load(path).count() == 6  # Spark reads what delta-rs wrote


def test_only_local_paths_use_delta_rs() -> None:
    assert is_local("/data/lake/p/quality_results") and is_local("file:///data/x") and is_local("file:/data/x")
    assert not is_local("abfss://lake@acct.dfs.core.windows.net/k/p/quality_results")
    assert not is_local("s3a://bucket/p") and not is_local("dbfs:/mnt/lake/p")


def test_quality_command_shows_the_last_results(spark, local_target) -> None:
    from kappalake.cli import quality as quality_cli

    path = f"{local_target.storage.root.rstrip('/')}/payments/{quality_cli.RESULTS_TABLE}"
    shutil.rmtree(path, ignore_errors=True)
    app = typer.Typer()
    app.command()(quality_cli.command)
    runner = CliRunner()
    empty = runner.invoke(app, ["payments"])
    assert empty.exit_code == 0 and "no quality results yet" in empty.output
    write_results(results_frame(spark, _results(5, NOW, success=False), "payments", "silver"), path, "app", 5)
    try:
        shown = runner.invoke(app, ["payments", "--limit", "5"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, shown.output
        assert "rows_ok" in shown.output and "FAIL" in shown.output and "5 rows" in shown.output
        assert "id_present" in shown.output and "pass" in shown.output
        failed = runner.invoke(app, ["payments", "--failed"], env={"COLUMNS": "200"})
        assert "rows_ok" in failed.output and "id_present" not in failed.output
    finally:
        shutil.rmtree(path, ignore_errors=True)
