"""merge_latest into a temporary Delta table: sequence ordering and (app id, version) idempotency.

Delta MERGEs are the slowest thing in the unit suite, so one module-scoped table gets the first two
batches; the replay test continues on that table, and the ordering test reads it as of the version
the first two batches produced, so the tests do not depend on their order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chispa import assert_df_equality

from kappalake.io.delta.batch import merge_latest, table_exists

SCHEMA = "card_id string, seq long, note string, source_offset long"
KEYS = ["card_id"]
APP = "kappalake:payments:silver:query-1"
FAST_DELTA = {"spark.sql.shuffle.partitions": "1", "spark.databricks.delta.snapshotPartitions": "1"}


def delta_version(path: Path) -> int:
    """The table's latest commit, straight from the transaction log."""
    return max(int(commit.stem) for commit in (path / "_delta_log").glob("*.json"))


def merge(spark, path: Path, rows: list[tuple], app_id: str, version: int) -> None:
    merge_latest(spark.createDataFrame(rows, SCHEMA), str(path), KEYS, "seq", app_id, version)


def table(spark, path: Path, version: int | None = None):
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(str(path))


@pytest.fixture(scope="module")
def merged(spark, tmp_path_factory: pytest.TempPathFactory):
    """Batch 0: c1 at seq 3. Batch 1 (older data arriving later): c1 at seq 2 and a new key c2."""
    saved = {key: spark.conf.get(key, None) for key in FAST_DELTA}
    for key, value in FAST_DELTA.items():
        spark.conf.set(key, value)
    path = tmp_path_factory.mktemp("merge") / "silver"
    merge(spark, path, [("c1", 3, "third", 30)], APP, 0)
    merge(spark, path, [("c1", 2, "second", 20), ("c2", 1, "first", 10)], APP, 1)
    yield path, delta_version(path)
    for key, value in saved.items():
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)


def test_out_of_order_batches_keep_the_highest_sequence(spark, merged) -> None:
    path, version = merged
    assert table_exists(spark, str(path))
    assert version == 2  # create, then one MERGE per batch
    expected = spark.createDataFrame([("c1", 3, "third", 30), ("c2", 1, "first", 10)], SCHEMA)
    assert_df_equality(table(spark, path, version), expected, ignore_nullable=True, ignore_row_order=True)


def test_replayed_batch_is_skipped_and_a_new_app_id_is_applied(spark, merged) -> None:
    path, _ = merged
    before = delta_version(path)
    newer = [("c2", 9, "ninth", 90)]

    merge(spark, path, newer, APP, 1)  # the same (app id, version) again: a replayed batch
    merge(spark, path, newer, APP, 0)  # an older version of the same app: also already committed
    assert delta_version(path) == before
    unchanged = spark.createDataFrame([("c1", 3, "third", 30), ("c2", 1, "first", 10)], SCHEMA)
    assert_df_equality(table(spark, path), unchanged, ignore_nullable=True, ignore_row_order=True)

    merge(spark, path, newer, "kappalake:payments:silver:query-2", 1)  # a new checkpoint's batch 1
    assert delta_version(path) == before + 1
    applied = spark.createDataFrame([("c1", 3, "third", 30), ("c2", 9, "ninth", 90)], SCHEMA)
    assert_df_equality(table(spark, path), applied, ignore_nullable=True, ignore_row_order=True)
    assert spark.conf.get("spark.databricks.delta.write.txnAppId", None) is None  # nothing leaks to later writes
