"""Validation results in a Delta table: written by the jobs (Spark), read by the CLI (delta-rs, no Spark)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kappalake.quality.batch import ValidationResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

RESULT_SCHEMA = ("pipeline string, `table` string, suite string, expectation string, kind string, level string, "
                 "on_fail string, success boolean, observed_value string, batch_id long, validated_at timestamp")
WHAT = "quality results"


def results_frame(spark: SparkSession, results: Sequence[ValidationResult], pipeline: str, table: str) -> DataFrame:
    """``results`` as a DataFrame of the results table's schema (``table``: silver, gold.<view>, ...)."""
    rows = [(pipeline, table, r.suite, r.expectation, r.kind, r.level, r.on_fail, r.success, r.observed_value,
             r.batch_id, r.validated_at) for r in results]
    return spark.createDataFrame(rows, RESULT_SCHEMA)


def write_results(df: DataFrame, path: str, app_id: str, batch_id: int) -> None:
    """Append ``df`` to the results table at ``path``, once per (app_id, batch_id) (a replay adds nothing).

    For a batch stopped by ``on_fail: stop`` use a distinct app id (e.g. ``<app_id>:stop``): the replay
    after the fix then still records its own results under the query's app id.
    """
    from kappalake.io.delta.batch import append_idempotent

    append_idempotent(df, path, app_id, batch_id)


def read_last_results(path: str, limit: int = 50, failed_only: bool = False) -> list[dict[str, Any]]:
    """The newest ``limit`` results at ``path`` (delta-rs; newest batch first), as dicts."""
    from kappalake.io.delta.local import query

    where = "WHERE NOT success " if failed_only else ""
    sql = (f"SELECT * FROM t {where}ORDER BY validated_at DESC, batch_id DESC, \"table\", expectation "
           f"LIMIT {int(limit)}")
    return query(path, WHAT, sql).to_pylist()
