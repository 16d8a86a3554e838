"""The first vertical slice: Spark's Kafka source -> Delta bronze, every record exactly once."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from deltalake import DeltaTable

from kappalake.generator import GeneratorOptions
from kappalake.io.delta.stream import Trigger
from kappalake.pipelines.produce import produce
from kappalake.pipelines.runner import run_pipeline
from kappalake.transforms.bronze import BRONZE_COLUMNS
from tests.integration.kafka_helpers import consume_all

START = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.compat
def test_bronze_row_count_equals_produced(spark, make_context, topic_name, bootstrap) -> None:
    ctx = make_context("payments", topic_name)
    options = GeneratorOptions(seed=5, late_fraction=0.05, duplicate_fraction=0.05, malformed_fraction=0.05)
    summary = produce(ctx, events=3000, options=options, start_time=START)

    result = run_pipeline(ctx, ["bronze"], Trigger(available_now=True), spark=spark)
    assert result.totals[f"{ctx.pipeline.name}.bronze"].input_rows == summary.sent

    bronze = spark.read.format("delta").load(ctx.table_path("bronze"))
    assert tuple(bronze.columns) == BRONZE_COLUMNS
    assert bronze.count() == summary.sent  # nothing parsed, nothing dropped (malformed included)
    assert bronze.select("topic", "partition", "offset").distinct().count() == summary.sent
    kafka = {(p, o): v for p, o, _, v in consume_all(bootstrap, topic_name)}
    rows = {(r["partition"], r["offset"]): bytes(r["value"]) for r in bronze.select("partition", "offset", "value")
            .collect()}
    assert rows == kafka  # byte-identical values at the same coordinates
    assert DeltaTable(ctx.table_path("bronze")).metadata().partition_columns == ["ingest_date"]
    assert_bronze_file_layout(ctx.table_path("bronze"))

    # A second run over the same checkpoint reads only what is new.
    more = produce(ctx, events=500, options=GeneratorOptions(seed=6), start_time=START)
    again = run_pipeline(ctx, ["bronze"], Trigger(available_now=True), spark=spark)
    assert again.totals[f"{ctx.pipeline.name}.bronze"].input_rows == more.sent
    assert spark.read.format("delta").load(ctx.table_path("bronze")).count() == summary.sent + more.sent


def assert_bronze_file_layout(path: str) -> None:
    """Payload bytes without dictionary or page statistics, timestamps as INT64 micros (not INT96)."""
    import pyarrow.parquet as pq

    files = [f for f in DeltaTable(path).file_uris() if f.endswith(".parquet")]
    assert files
    for file in files:
        meta = pq.ParquetFile(file.removeprefix("file://")).metadata
        columns = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i)
                   for i in range(meta.num_columns)}
        value = columns["value"]
        assert not any("DICTIONARY" in encoding for encoding in value.encodings), value.encodings
        assert not value.is_stats_set
        assert columns["offset"].is_stats_set  # other columns keep theirs
        assert columns["ingest_time"].physical_type == "INT64"
        assert columns["kafka_timestamp"].physical_type == "INT64"


def test_missing_topic_fails_clearly(spark, make_context) -> None:
    import pytest

    from kappalake.errors import KappalakeError

    ctx = make_context("payments", "no-such-topic-here")
    with pytest.raises(KappalakeError, match="no-such-topic-here.*does not exist"):
        run_pipeline(ctx, ["bronze"], Trigger(available_now=True), spark=spark)
