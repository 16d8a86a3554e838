"""Validation results in a Delta table: appended once per (app id, batch id), read by the CLI without Spark.

Two writers, same table layout and the same Delta txn idempotency (a ``SetTransaction`` per app id,
so either can follow the other): :func:`write_results` (Spark, ``append_idempotent``) and
:func:`append_results` (delta-rs from the driver: no Spark job and no Spark snapshot rebuild, ~20 ms
against a full Spark Delta commit per batch). :func:`record_results` picks delta-rs for local
paths and Spark for cloud/DBFS paths, whose credentials live in the Spark session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kappalake.quality.batch import ValidationResult

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

RESULT_SCHEMA = ("pipeline string, `table` string, suite string, expectation string, kind string, level string, "
                 "on_fail string, success boolean, observed_value string, batch_id long, validated_at timestamp")
WHAT = "quality results"


def _rows(results: Sequence[ValidationResult], pipeline: str, table: str) -> list[tuple[Any, ...]]:
    return [(pipeline, table, r.suite, r.expectation, r.kind, r.level, r.on_fail, r.success, r.observed_value,
             r.batch_id, r.validated_at) for r in results]


def results_frame(spark: SparkSession, results: Sequence[ValidationResult], pipeline: str, table: str) -> DataFrame:
    """``results`` as a DataFrame of the results table's schema (``table``: silver, gold.<view>, ...)."""
    return spark.createDataFrame(_rows(results, pipeline, table), RESULT_SCHEMA)


def results_arrow(results: Sequence[ValidationResult], pipeline: str, table: str) -> pa.Table:
    """``results`` as an Arrow table with the Delta types Spark writes (timestamps: microseconds, UTC)."""
    import pyarrow as pa

    schema = pa.schema([(name, pa.string()) for name in ("pipeline", "table", "suite", "expectation", "kind",
                                                         "level", "on_fail")]
                       + [("success", pa.bool_()), ("observed_value", pa.string()), ("batch_id", pa.int64()),
                          ("validated_at", pa.timestamp("us", tz="UTC"))])
    columns = list(zip(*_rows(results, pipeline, table))) or [[] for _ in schema]
    return pa.table([pa.array(list(c), type=f.type) for c, f in zip(columns, schema)], schema=schema)


def write_results(df: DataFrame, path: str, app_id: str, batch_id: int) -> None:
    """Append ``df`` to the results table at ``path`` with Spark, once per (app_id, batch_id).

    For a batch stopped by ``on_fail: stop`` use a distinct app id (e.g. ``<app_id>:stop``): the replay
    after the fix then still records its own results under the query's app id.
    """
    from kappalake.io.delta.batch import append_idempotent

    append_idempotent(df, path, app_id, batch_id)


def append_results(results: Sequence[ValidationResult], path: str, pipeline: str, table: str, app_id: str,
                   batch_id: int, storage_options: dict[str, str] | None = None) -> bool:
    """Append ``results`` with delta-rs unless the table already holds (app_id, batch_id); True if written."""
    from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

    if DeltaTable.is_deltatable(path, storage_options):
        done = DeltaTable(path, storage_options=storage_options).transaction_version(app_id)
        if done is not None and done >= batch_id:
            return False
    write_deltalake(path, results_arrow(results, pipeline, table), mode="append", storage_options=storage_options,
                    commit_properties=CommitProperties(app_transactions=[Transaction(app_id, batch_id)]))
    return True


def is_local(path: str) -> bool:
    """A path on the driver's file system (plain or ``file:``), where delta-rs needs no credentials."""
    return path.startswith("file:") or ("://" not in path and not path.startswith("dbfs:"))


def record_results(spark: SparkSession, results: Sequence[ValidationResult], path: str, pipeline: str, table: str,
                   app_id: str, batch_id: int) -> None:
    """Append ``results`` once per (app_id, batch_id): delta-rs for local paths, Spark otherwise."""
    if not results:
        return
    if is_local(path):
        local = path[len("file://"):] if path.startswith("file://") else path.removeprefix("file:")
        append_results(results, local, pipeline, table, app_id, batch_id)
    else:
        write_results(results_frame(spark, results, pipeline, table), path, app_id, batch_id)


def read_last_results(path: str, limit: int = 50, failed_only: bool = False) -> list[dict[str, Any]]:
    """The newest ``limit`` results at ``path`` (delta-rs; newest batch first), as dicts."""
    from kappalake.io.delta.local import query

    where = "WHERE NOT success " if failed_only else ""
    sql = (f"SELECT * FROM t {where}ORDER BY validated_at DESC, batch_id DESC, \"table\", expectation "
           f"LIMIT {int(limit)}")
    return query(path, WHAT, sql).to_pylist()
