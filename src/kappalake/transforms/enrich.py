"""Gold view enrichment: left-join the events with dimension tables (stream-static, per micro-batch).

The dimension of an ``enrich`` entry is the silver Delta table of another pipeline of the same target
(``<storage root>/<pipeline>/silver``), typically a CDC current-state table. It is read once at job
start as a static DataFrame (:func:`read_dimension`: the key and the requested columns, rows marked
``cdc_deleted`` left out); each micro-batch joins its events with it inside the gold ``foreachBatch``.
Every join is a new query plan, and Delta resolves the table's latest snapshot when a plan is analysed,
so each micro-batch sees the dimension as of that batch without restarting the job (measured, see
tests/integration/test_gold_enrich.py). A window already written keeps the values its events were
joined with; a change applies to the events of later batches.

The join is a left join: an event without a dimension row (or with a null key) keeps null enrichment
columns. Group keys cannot be null (ClickHouse sorting keys), so :func:`fill_keys` puts such events
under the type's default. The dimension key must be unique (a current-state table is): a duplicated
key would count its events twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, NumericType, StringType

from kappalake.config.enrichment import EnrichConfig
from kappalake.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: Column of a CDC silver table in ``deletes: mark`` mode: true for rows deleted at the source.
DELETED = "cdc_deleted"
_KEY = "_enrich_key"


def dimension_path(root: str, pipeline: str) -> str:
    """The silver table of ``pipeline`` under the target's storage ``root`` (RunContext's default layout)."""
    return f"{root.rstrip('/')}/{pipeline}/silver"


def dimension_rows(table: DataFrame, entry: EnrichConfig) -> DataFrame:
    """The dimension side of ``entry``: its key (as ``_enrich_key``) and columns, deleted rows left out."""
    rows = table
    if DELETED in table.columns:
        rows = rows.where(~F.coalesce(F.col(DELETED), F.lit(False)))
    return rows.select(F.col(entry.dimension_key).alias(_KEY), *[F.col(c) for c in entry.columns])


def enrich_events(events: DataFrame, dimensions: list[tuple[EnrichConfig, DataFrame]]) -> DataFrame:
    """``events`` with each entry's columns from its dimension table (left join on the entry's key).

    ``dimensions`` pairs each entry with its dimension table (whole, or already :func:`dimension_rows`)."""
    for entry, table in dimensions:
        side = table if _KEY in table.columns else dimension_rows(table, entry)
        events = (events.join(side, events[entry.event_field] == side[_KEY], "left")
                  .drop(side[_KEY]))
    return events


def _default(frame: DataFrame, column: str) -> object:
    data_type = frame.schema[column].dataType
    if isinstance(data_type, StringType):
        return ""
    if isinstance(data_type, NumericType):
        return 0
    if isinstance(data_type, BooleanType):
        return False
    raise ConfigError(f"enrichment column {column!r} of type {data_type.simpleString()} cannot be a group key "
                      "(string, numeric or boolean columns can)")


def fill_keys(frame: DataFrame, columns: list[str]) -> DataFrame:
    """Null values of the group keys ``columns`` (events without a dimension row) as the type's default:
    '' for strings, 0 for numbers, false for booleans (what a non-Nullable ClickHouse column holds)."""
    if not columns:
        return frame
    return frame.withColumns({c: F.coalesce(F.col(c), F.lit(_default(frame, c)).cast(frame.schema[c].dataType))
                              for c in columns})


def read_dimension(spark: SparkSession, path: str, entry: EnrichConfig, view: str) -> DataFrame:
    """The static dimension DataFrame of ``entry`` (a plan, not a copy: each use reads the latest version).

    Raises ConfigError when the table does not exist yet or lacks a column the view asks for."""
    from kappalake.io.delta.batch import table_exists

    if not table_exists(spark, path):
        raise ConfigError(f"gold view {view!r} enriches from pipeline {entry.pipeline!r}, whose silver table "
                          f"{path} does not exist yet: run that pipeline first "
                          f"(kappalake run {entry.pipeline} --layer silver) so the dimension table is there")
    table = spark.read.format("delta").load(path)
    missing = [c for c in (entry.dimension_key, *entry.columns) if c not in table.columns]
    if missing:
        raise ConfigError(f"gold view {view!r}: the silver table of pipeline {entry.pipeline!r} ({path}) has no "
                          f"column {', '.join(map(repr, missing))}; its columns: {', '.join(table.columns)}")
    return dimension_rows(table, entry)
