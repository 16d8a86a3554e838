"""Apply a micro-batch of Debezium change events to a Delta current-state table, exactly once.

The batch (already validated) holds the table's columns plus ``cdc_op`` ('r' snapshot read, 'c' insert,
'u' update, 'd' delete with the before-image, 't' Kafka tombstone: key only, null ``cdc_lsn``/``cdc_ts``),
``cdc_lsn``, ``cdc_ts`` and the Kafka lineage columns. The sequence of a change is (cdc_lsn, source_offset).

* Per key only the batch's newest change matters; a row changes only for a greater ``cdc_lsn``, so
  duplicates, redelivery after a Kafka Connect restart and replays of older offsets converge.
* ``deletes="delete"`` removes the row and records (key, delete lsn) in a small tombstones table, so an
  older change redelivered later cannot resurrect the key; ``deletes="mark"`` keeps the row
  (``cdc_deleted = true``, before-image and lsn), which then guards on its own.
* Every write is idempotent per (app_id, version) through Delta's txn confs (txn ids are per table).
* Columns the table lacks are added by MERGE schema evolution.

SCD type 2 history: :mod:`kappalake.io.delta.scd2`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from kappalake.io.delta.batch import _TXN_APP, _TXN_RESET, _TXN_VERSION, create_if_missing

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

CDC_COLUMNS = ("cdc_op", "cdc_lsn", "cdc_ts")
LINEAGE_COLUMNS = ("source_topic", "source_partition", "source_offset", "kafka_timestamp")
DELETED_COLUMN = "cdc_deleted"
UPSERT_OPS = ("r", "c", "u")
DELETE_MODES = ("delete", "mark")


@dataclass(frozen=True)
class ApplyCounts:
    """What one MERGE into the current-state table did (from its result row; free to read).

    ``applied`` is False when Delta skipped the MERGE because (app_id, version) was committed already.
    In ``mark`` mode a delete is an update of the row (``cdc_deleted = true``), counted in ``updated``."""

    applied: bool
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


@contextmanager
def idempotent_write(spark: SparkSession, app_id: str, version: int) -> Iterator[None]:
    """Session confs making the next Delta commit a no-op if the table already holds (app_id, version)."""
    spark.conf.set(_TXN_APP, app_id)
    spark.conf.set(_TXN_VERSION, str(version))
    spark.conf.set(_TXN_RESET, "true")
    try:
        yield
    finally:
        spark.conf.unset(_TXN_APP)
        spark.conf.unset(_TXN_VERSION)


def key_condition(keys: Sequence[str], target: str = "t", source: str = "s") -> str:
    return " AND ".join(f"{target}.`{k}` = {source}.`{k}`" for k in keys)


# --- pure DataFrame helpers -------------------------------------------------------------------------

def latest_change(changes: DataFrame, keys: Sequence[str]) -> DataFrame:
    """One row per key: the newest change by (cdc_lsn, source_offset). A tombstone ('t', no lsn) wins
    only when it is the key's last record by source_offset (it always follows its delete)."""
    by_offset = Window.partitionBy(*keys).orderBy(F.col("source_offset").desc())
    last_tombstone = (F.col("cdc_op") == "t") & (F.col("_offset_rank") == 1)
    newest = Window.partitionBy(*keys).orderBy(
        last_tombstone.desc(), F.col("cdc_lsn").desc_nulls_last(), F.col("source_offset").desc())
    return (changes.withColumn("_offset_rank", F.row_number().over(by_offset))
            .withColumn("_rank", F.row_number().over(newest))
            .where(F.col("_rank") == 1).drop("_rank", "_offset_rank"))


def delete_lsns(changes: DataFrame, keys: Sequence[str]) -> DataFrame:
    """(keys, cdc_lsn): the greatest delete lsn per key of the batch, whichever change won the key."""
    return (changes.where(F.col("cdc_op") == "d").groupBy(*keys)
            .agg(F.max("cdc_lsn").alias("cdc_lsn")))


def drop_deleted_replays(latest: DataFrame, recorded: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Drop changes whose lsn is not greater than the key's ``recorded`` delete lsn (a replay of a change
    older than the delete); tombstones pass."""
    guard = recorded.select(*keys, F.col("cdc_lsn").alias("_deleted_lsn"))
    keep = ((F.col("cdc_op") == "t") | F.col("_deleted_lsn").isNull()
            | (F.col("cdc_lsn") > F.col("_deleted_lsn")))
    return latest.join(guard, list(keys), "left").where(keep).select(*latest.columns)


def with_deleted_flag(latest: DataFrame) -> DataFrame:
    """``mark`` mode rows: ``cdc_deleted`` true for a delete (its before-image kept), false otherwise."""
    return latest.withColumn(DELETED_COLUMN, F.coalesce(F.col("cdc_op") == "d", F.lit(False)))


# --- writes ---------------------------------------------------------------------------------------

def apply_changes(changes: DataFrame, path: str, keys: Sequence[str], app_id: str, version: int,
                  deletes: str = "delete", tombstones_path: str | None = None) -> ApplyCounts:
    """MERGE the batch ``changes`` into the current-state table at ``path`` (created if missing), at most
    once per (app_id, version). Rows hold the table columns, ``cdc_op``/``cdc_lsn``/``cdc_ts`` and the
    lineage columns (plus ``cdc_deleted`` in ``mark`` mode). ``tombstones_path`` (``delete`` mode; default
    ``path + "_deletes"``) holds (keys, cdc_lsn) of deleted keys."""
    from delta.tables import DeltaTable

    if deletes not in DELETE_MODES:
        raise ValueError(f"deletes must be one of {DELETE_MODES}, not {deletes!r}")
    keys = list(keys)
    spark = changes.sparkSession
    upsert = "s.cdc_op IN ('r', 'c', 'u')"
    newer = "s.cdc_lsn > t.cdc_lsn"
    if deletes == "mark":
        # the marked row keeps the delete's lsn: no tombstones table; Kafka tombstones add nothing
        source = with_deleted_flag(latest_change(changes.where(F.col("cdc_op") != "t"), keys))
        create_if_missing(source, path)
        merge = (DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), key_condition(keys))
                 .withSchemaEvolution()
                 .whenMatchedUpdateAll(condition=newer)
                 .whenNotMatchedInsertAll())
        with idempotent_write(spark, app_id, version):
            return _counts(merge.execute())

    tombstones_path = tombstones_path or path + "_deletes"
    marks = delete_lsns(changes, keys)
    create_if_missing(marks, tombstones_path)
    has_deletes = bool(changes.where(F.col("cdc_op") == "d").limit(1).collect())
    recorded = spark.read.format("delta").load(tombstones_path)
    source = drop_deleted_replays(latest_change(changes, keys), recorded, keys)
    create_if_missing(source, path)
    merge = (DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), key_condition(keys))
             .withSchemaEvolution()
             .whenMatchedDelete(condition=f"s.cdc_op = 't' OR (s.cdc_op = 'd' AND {newer})")
             .whenMatchedUpdateAll(condition=f"{upsert} AND {newer}")
             .whenNotMatchedInsertAll(condition=upsert))
    with idempotent_write(spark, app_id, version):
        counts = _counts(merge.execute())
    if not has_deletes:  # nothing to record: no commit (a MERGE of nothing still costs a Delta commit)
        return counts
    # After the state: a retry after a crash in between recomputes the same source (the tombstones
    # table does not hold this batch yet), skips the state MERGE and records the deletes.
    record = (DeltaTable.forPath(spark, tombstones_path).alias("t").merge(marks.alias("s"), key_condition(keys))
              .whenMatchedUpdate(condition=newer, set={"cdc_lsn": "s.cdc_lsn"})
              .whenNotMatchedInsertAll())
    with idempotent_write(spark, app_id, version):
        record.execute()
    return counts


def _counts(result: DataFrame) -> ApplyCounts:
    rows = result.collect()  # one metrics row; none when Delta skipped the commit as already written
    if not rows:
        return ApplyCounts(applied=False)
    metrics = rows[0].asDict()
    return ApplyCounts(applied=True, inserted=int(metrics.get("num_inserted_rows") or 0),
                       updated=int(metrics.get("num_updated_rows") or 0),
                       deleted=int(metrics.get("num_deleted_rows") or 0))
