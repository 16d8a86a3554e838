"""Delta table maintenance: bin-packing compaction of small files, VACUUM, log retention.

Safe next to a live streaming writer that only appends: OPTIMIZE's commit removes and adds files with
``dataChange = false`` (a Delta stream reading the table skips it) and an append never conflicts with it.
A writer that MERGEs (silver in upsert mode, a backfill) would fail on files OPTIMIZE removed under it, so
the caller skips compaction of such a table while its writer runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

_MIN_FILE_SIZE = "spark.databricks.delta.optimize.minFileSize"
_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
LOG_RETENTION = "delta.logRetentionDuration"
LOG_RETENTION_DEFAULT = f"spark.databricks.delta.properties.defaults.{LOG_RETENTION.removeprefix('delta.')}"


@dataclass(frozen=True)
class TableFiles:
    """The live files of a table's current version."""

    files: int
    bytes: int


def table_files(spark: SparkSession, path: str) -> TableFiles:
    """File count and size of the current version of the Delta table at ``path``."""
    row = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").select("numFiles", "sizeInBytes").first()
    return TableFiles(int(row["numFiles"] or 0), int(row["sizeInBytes"] or 0))


def compact(spark: SparkSession, path: str, below_bytes: int) -> tuple[int, int]:
    """OPTIMIZE the table: files under ``below_bytes`` are packed into larger ones, bigger files stay.
    Returns (files removed, files added)."""
    from delta.tables import DeltaTable

    before = spark.conf.get(_MIN_FILE_SIZE, None)
    spark.conf.set(_MIN_FILE_SIZE, str(below_bytes))
    try:
        metrics = DeltaTable.forPath(spark, path).optimize().executeCompaction().select("metrics").first()
    finally:
        if before is None:
            spark.conf.unset(_MIN_FILE_SIZE)
        else:
            spark.conf.set(_MIN_FILE_SIZE, before)
    stats = metrics["metrics"] if metrics is not None else None
    if stats is None:
        return 0, 0
    return int(stats["numFilesRemoved"] or 0), int(stats["numFilesAdded"] or 0)


def vacuum(spark: SparkSession, path: str, retention_seconds: float) -> None:
    """Delete files the table stopped referencing more than ``retention_seconds`` ago.

    The caller checked the retention against the pipeline's safety margin; Delta's own check (7 days) is
    lifted for this call only."""
    from delta.tables import DeltaTable

    before = spark.conf.get(_RETENTION_CHECK, None)
    spark.conf.set(_RETENTION_CHECK, "false")
    try:
        DeltaTable.forPath(spark, path).vacuum(retention_seconds / 3600.0)
    finally:
        if before is None:
            spark.conf.unset(_RETENTION_CHECK)
        else:
            spark.conf.set(_RETENTION_CHECK, before)


def log_retention(spark: SparkSession, path: str) -> str | None:
    """The table's ``delta.logRetentionDuration`` property, or None when it has the default (30 days)."""
    properties = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").select("properties").first()["properties"] or {}
    return properties.get(LOG_RETENTION)


def interval(seconds: int) -> str:
    """A Delta interval property value."""
    return f"interval {int(seconds)} seconds"
