"""Quality in a real streaming query's foreachBatch: GX on the batch DataFrame, the stop gate and its replay."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pyspark.errors import StreamingQueryException

from kappalake.quality.batch import BatchValidator, QualityStop, enforce, explain_quality_stop
from kappalake.quality.config import QualityConfig
from kappalake.quality.results import read_last_results, record_results
from kappalake.quality.rows import split_rows

NOW = datetime.now(timezone.utc)
ROWS = [(f"e{i}", "USD" if i % 4 else "XXX", float(i), NOW - timedelta(seconds=i)) for i in range(20)]
RULES = [
    {"name": "known_currency", "kind": "in_set", "column": "currency", "values": ["USD", "EUR"]},
    {"name": "id_unique", "kind": "unique", "column": "id"},
    {"name": "fresh", "kind": "freshness", "column": "ts", "max_lag": "1 hour"},
]


class Writer:
    """A minimal silver-like foreachBatch: validate, stop or split, write valid/quarantined, record results."""

    def __init__(self, config: QualityConfig, root: Path) -> None:
        self.config, self.root = config, root
        self.validator = BatchValidator(config, "test.silver")

    def __call__(self, batch, batch_id: int) -> None:
        outcome = self.validator.run(batch, batch_id)
        results = str(self.root / "quality_results")
        try:
            enforce(outcome.results, self.config)
        except QualityStop:
            record_results(batch.sparkSession, outcome.results, results, "test", "silver", "app:stop", batch_id)
            raise
        valid, quarantined = split_rows(batch, self.config)
        valid.write.format("delta").mode("append").save(str(self.root / "valid"))
        quarantined.write.format("delta").mode("append").save(str(self.root / "quarantined"))
        record_results(batch.sparkSession, outcome.results, results, "test", "silver", "app", batch_id)


def _run(spark, source: str, checkpoint: str, writer: Writer) -> None:
    query = (spark.readStream.format("delta").load(source).writeStream.foreachBatch(writer)
             .option("checkpointLocation", checkpoint).trigger(availableNow=True).start())
    query.awaitTermination(180)


@pytest.fixture
def source(spark, tmp_path: Path) -> str:
    path = str(tmp_path / "source")
    spark.createDataFrame(ROWS, "id string, currency string, amount double, ts timestamp") \
        .write.format("delta").save(path)
    return path


@pytest.mark.parametrize("engine", ["profile", "gx_spark"])
def test_quarantine_and_results_in_a_streaming_query(spark, tmp_path: Path, source: str, engine: str) -> None:
    config = QualityConfig.model_validate({"expectations": RULES, "engine": engine})
    _run(spark, source, str(tmp_path / "checkpoint"), Writer(config, tmp_path))
    assert spark.read.format("delta").load(str(tmp_path / "valid")).count() == 15
    quarantined = spark.read.format("delta").load(str(tmp_path / "quarantined")).collect()
    assert sorted(r["id"] for r in quarantined) == ["e0", "e12", "e16", "e4", "e8"]
    assert {tuple(r["failed_expectations"]) for r in quarantined} == {("known_currency",)}
    results = {r["expectation"]: r for r in read_last_results(str(tmp_path / "quality_results"))}
    assert {name: r["success"] for name, r in results.items()} == {"known_currency": False, "id_unique": True,
                                                                   "fresh": True}
    assert results["known_currency"]["observed_value"] == "5 of 20 rows unexpected"


def test_stop_fails_before_writing_and_the_fixed_rule_replays_the_batch(spark, tmp_path: Path, source: str) -> None:
    strict = QualityConfig.model_validate([*RULES[1:], {"name": "enough_rows", "kind": "row_count", "min": 100,
                                                        "on_fail": "stop"}])
    checkpoint = str(tmp_path / "checkpoint")
    with pytest.raises(StreamingQueryException) as info:
        _run(spark, source, checkpoint, Writer(strict, tmp_path))
    message = explain_quality_stop(str(info.value))
    assert message is not None and "enough_rows" in message and "observed 20 rows" in message
    assert "batch 0" in message and "replays this batch" in message
    assert not (tmp_path / "valid").exists()  # nothing of the batch was written
    stopped = read_last_results(str(tmp_path / "quality_results"), failed_only=True)
    assert [r["expectation"] for r in stopped] == ["enough_rows"]

    fixed = QualityConfig.model_validate([*RULES[1:], {"name": "enough_rows", "kind": "row_count", "min": 10,
                                                       "on_fail": "stop"}])
    _run(spark, source, checkpoint, Writer(fixed, tmp_path))  # same checkpoint: batch 0 again
    assert spark.read.format("delta").load(str(tmp_path / "valid")).count() == 20
    latest = [r for r in read_last_results(str(tmp_path / "quality_results")) if r["expectation"] == "enough_rows"]
    assert [(r["batch_id"], r["success"]) for r in latest] == [(0, True), (0, False)]
