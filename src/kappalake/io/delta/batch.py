"""Idempotent Delta writes from ``foreachBatch``: each (app id, batch id) commits at most once per table.

Appends carry the ``txnAppId``/``txnVersion`` writer options; MERGE uses the session-conf form with
auto-reset on the batch's own (per-query) session. A replayed batch whose version the table already
holds is skipped by Delta.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_TXN_APP = "spark.databricks.delta.write.txnAppId"
_TXN_VERSION = "spark.databricks.delta.write.txnVersion"
_TXN_RESET = "spark.databricks.delta.write.txnVersion.autoReset.enabled"


def table_exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def append_idempotent(df: DataFrame, path: str, app_id: str, version: int,
                      partition_by: Sequence[str] = (), merge_schema: bool = False) -> None:
    """Append ``df`` to the Delta table at ``path`` unless (app_id, version) was committed already;
    ``merge_schema`` adds columns ``df`` has and the table lacks (a field new in the reader schema)."""
    writer = (df.write.format("delta").mode("append").option("txnAppId", app_id)
              .option("txnVersion", version))
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def create_if_missing(df: DataFrame, path: str, partition_by: Sequence[str] = (),
                      properties: dict[str, str] | None = None) -> None:
    """Create an empty Delta table with ``df``'s schema (and table ``properties``) at ``path`` if none exists."""
    from delta.tables import DeltaTable

    spark = df.sparkSession
    if table_exists(spark, path):
        return
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(df.schema)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    for name, value in (properties or {}).items():
        builder = builder.property(name, value)
    builder.execute()


def merge_insert_only(df: DataFrame, path: str, keys: Sequence[str], app_id: str, version: int,
                      prune: str | None = None) -> None:
    """Insert the rows of ``df`` whose ``keys`` the table at ``path`` does not hold yet (a replay never
    duplicates), idempotent per (app_id, version). ``prune`` (SQL on ``t``) narrows the files read."""
    from delta.tables import DeltaTable

    spark = df.sparkSession
    create_if_missing(df, path)
    condition = " AND ".join([f"t.`{k}` <=> s.`{k}`" for k in keys] + ([prune] if prune else []))
    spark.conf.set(_TXN_APP, app_id)
    spark.conf.set(_TXN_VERSION, str(version))
    spark.conf.set(_TXN_RESET, "true")
    try:
        DeltaTable.forPath(spark, path).alias("t").merge(df.alias("s"), condition).whenNotMatchedInsertAll().execute()
    finally:
        spark.conf.unset(_TXN_APP)
        spark.conf.unset(_TXN_VERSION)


def merge_latest(df: DataFrame, path: str, keys: Sequence[str], sequence: str, app_id: str, version: int) -> None:
    """Upsert ``df`` (one row per key) into ``path``: insert new keys, update a key only when the
    incoming ``sequence`` is greater (out-of-order and replay safe), idempotent per (app_id, version)."""
    from delta.tables import DeltaTable

    spark = df.sparkSession
    create_if_missing(df, path)
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    spark.conf.set(_TXN_APP, app_id)
    spark.conf.set(_TXN_VERSION, str(version))
    spark.conf.set(_TXN_RESET, "true")
    try:
        (DeltaTable.forPath(spark, path).alias("t")
         .merge(df.alias("s"), condition)
         .whenMatchedUpdateAll(condition=f"s.`{sequence}` > t.`{sequence}`")
         .whenNotMatchedInsertAll()
         .execute())
    finally:
        spark.conf.unset(_TXN_APP)
        spark.conf.unset(_TXN_VERSION)
