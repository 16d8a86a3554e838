"""SCD type 2 history of a CDC table in Delta: one row per version of a key, exactly once per batch.

Columns: the table's columns, then ``valid_from`` (cdc_ts of the change that created the version),
``valid_to`` (cdc_ts of the change that closed it; null while current), ``is_current``, ``cdc_op`` (r/c/u:
what created it), ``end_op`` (null, 'u' or 'd': what closed it), ``cdc_lsn`` (of the creating change) and
``end_lsn`` (of the closing change; null while current).

One MERGE per batch ("staged updates"): one row per key carrying a merge key closes the key's current
version, rows with a null merge key insert the batch's new versions. Changes at or below the greatest lsn
the history holds for their key (created or closed) are skipped, so redelivery and replays are no-ops;
Delta's txn confs make a re-run of the same (app_id, version) a no-op too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from kappalake.io.delta.batch import create_if_missing
from kappalake.io.delta.cdc_apply import CDC_COLUMNS, LINEAGE_COLUMNS, idempotent_write

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

HISTORY_COLUMNS = ("valid_from", "valid_to", "is_current", "cdc_op", "end_op", "cdc_lsn", "end_lsn")
_CLOSE = ("valid_to", "end_op", "end_lsn")


def _merge_key(key: str) -> str:
    return f"_merge_{key}"


def table_columns(changes: DataFrame) -> list[str]:
    """The source table's own columns: everything but the CDC metadata and the Kafka lineage."""
    return [c for c in changes.columns if c not in (*CDC_COLUMNS, *LINEAGE_COLUMNS)]


def history_watermark(history: DataFrame, keys: Sequence[str]) -> DataFrame:
    """(keys, _seen_lsn): the greatest lsn per key the history holds, created or closed."""
    return history.groupBy(*keys).agg(
        F.max(F.greatest("cdc_lsn", F.coalesce("end_lsn", "cdc_lsn"))).alias("_seen_lsn"))


def new_changes(changes: DataFrame, keys: Sequence[str], watermark: DataFrame | None = None) -> DataFrame:
    """The batch's changes the history has not seen: tombstones dropped, one row per (key, lsn) (a
    redelivered duplicate counts once), only lsns above the key's ``watermark``."""
    changes = changes.where((F.col("cdc_op") != "t") & F.col("cdc_lsn").isNotNull())
    first = Window.partitionBy(*keys, "cdc_lsn").orderBy("source_offset")
    changes = changes.withColumn("_dup", F.row_number().over(first)).where(F.col("_dup") == 1).drop("_dup")
    if watermark is None:
        return changes
    return (changes.join(watermark, list(keys), "left")
            .where(F.col("_seen_lsn").isNull() | (F.col("cdc_lsn") > F.col("_seen_lsn")))
            .select(*changes.columns))


def _closing(op: Column) -> Column:
    return F.when(op == "d", F.lit("d")).when(op.isNotNull(), F.lit("u"))


def staged_history(changes: DataFrame, keys: Sequence[str]) -> DataFrame:
    """MERGE source for the history from :func:`new_changes`: per key, the first change as a close row
    (``_merge_<key>`` set, ``valid_to``/``end_op``/``end_lsn`` for the key's current version), then one
    insert row per r/c/u change (merge keys null), closed by the next change of the batch if any."""
    columns = table_columns(changes)
    order = Window.partitionBy(*keys).orderBy("cdc_lsn", "source_offset")
    nxt = {name: F.lead(name).over(order) for name in ("cdc_ts", "cdc_lsn", "cdc_op")}
    ordered = changes.select(*columns, "cdc_op", "cdc_ts", "cdc_lsn", F.row_number().over(order).alias("_n"),
                             nxt["cdc_ts"].alias("_next_ts"), nxt["cdc_lsn"].alias("_next_lsn"),
                             _closing(nxt["cdc_op"]).alias("_next_end_op"))
    null_keys = [F.lit(None).cast(ordered.schema[k].dataType).alias(_merge_key(k)) for k in keys]
    versions = ordered.where(F.col("cdc_op").isin("r", "c", "u")).select(
        *columns,
        F.col("cdc_ts").alias("valid_from"), F.col("_next_ts").alias("valid_to"),
        F.col("_next_lsn").isNull().alias("is_current"), "cdc_op", F.col("_next_end_op").alias("end_op"),
        "cdc_lsn", F.col("_next_lsn").alias("end_lsn"), *null_keys)
    closes = ordered.where(F.col("_n") == 1).select(
        *[F.col(c) if c in keys else F.lit(None).cast(ordered.schema[c].dataType).alias(c) for c in columns],
        F.lit(None).cast("timestamp").alias("valid_from"), F.col("cdc_ts").alias("valid_to"),
        F.lit(False).alias("is_current"), F.lit(None).cast("string").alias("cdc_op"),
        _closing(F.col("cdc_op")).alias("end_op"), F.lit(None).cast("bigint").alias("cdc_lsn"),
        F.col("cdc_lsn").alias("end_lsn"), *[F.col(k).alias(_merge_key(k)) for k in keys])
    return versions.unionByName(closes)


def apply_history(changes: DataFrame, path: str, keys: Sequence[str], app_id: str, version: int) -> None:
    """Record the batch ``changes`` in the SCD2 history table at ``path`` (created if missing) in one
    MERGE, at most once per (app_id, version). New source columns are added by schema evolution."""
    from delta.tables import DeltaTable

    keys = list(keys)
    spark = changes.sparkSession
    merge_keys = [_merge_key(k) for k in keys]
    create_if_missing(staged_history(new_changes(changes, keys), keys).drop(*merge_keys), path)
    watermark = history_watermark(spark.read.format("delta").load(path), keys)
    staged = staged_history(new_changes(changes, keys, watermark), keys)
    condition = " AND ".join(["t.is_current"] + [f"t.`{k}` = s.`{_merge_key(k)}`" for k in keys])
    merge = (DeltaTable.forPath(spark, path).alias("t").merge(staged.alias("s"), condition)
             .withSchemaEvolution()
             .whenMatchedUpdate(set={"is_current": "false", **{c: f"s.`{c}`" for c in _CLOSE}})
             .whenNotMatchedInsert(condition=" AND ".join(f"s.`{m}` IS NULL" for m in merge_keys),
                                   values={c: f"s.`{c}`" for c in staged.columns if c not in merge_keys}))
    with idempotent_write(spark, app_id, version):
        merge.execute()
