"""How the silver and gold writers apply a table's expectations: which apply in this run, where results go,
checking the SQL up front, and recording a stopped batch before the query fails."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kappalake.errors import ConfigError
from kappalake.quality.batch import QualityStop, ValidationResult, enforce
from kappalake.quality.config import QualityConfig
from kappalake.quality.results import record_results
from kappalake.runtime.context import RunContext

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

RESULTS_TABLE = "quality_results"


def effective(config: QualityConfig, ctx: RunContext) -> QualityConfig:
    """The expectations that apply in this run: a backfill replays old events on purpose, so freshness
    expectations (max event-time lag behind now) are left out of replays."""
    if not ctx.replay:
        return config
    kept = [e for e in config.expectations if e.kind != "freshness"]
    return config.model_copy(update={"expectations": kept})


def results_path(config: QualityConfig, ctx: RunContext) -> str:
    """The results table: the table's ``results_path`` or ``<root>/<pipeline>/quality_results``."""
    return config.results_path or ctx.table_path(RESULTS_TABLE)


def check_expressions(frame: DataFrame, config: QualityConfig, where: str) -> None:
    """Analyse every row-level check against ``frame``'s columns before the query starts, so a typo in a
    ``sql`` expression or a wrong column fails at start with the expectation's name, not mid-stream."""
    from pyspark.errors import AnalysisException, ParseException

    from kappalake.quality.rows import check

    static = frame.sparkSession.createDataFrame([], frame.schema)  # streams refuse window functions (unique)
    for expectation in config.expectations:
        if expectation.kind in ("row_count", "freshness"):
            continue
        try:
            static.select(check(expectation).alias("_passes"))
        except (AnalysisException, ParseException) as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise ConfigError(f"pipeline {where}: expectation {expectation.name!r} ({expectation.describe()}) "
                              f"cannot be evaluated on the table's columns ({', '.join(frame.columns)}): "
                              f"{first}") from None


def enforce_or_record(results: list[ValidationResult], config: QualityConfig, ctx: RunContext, table: str,
                      app_id: str, batch_id: int, spark: object) -> None:
    """Raise :class:`QualityStop` when an ``on_fail: stop`` expectation failed, after recording the
    batch's results under ``<app_id>:stop`` (the replay after the fix records its own under ``app_id``)."""
    try:
        enforce(results, config)
    except QualityStop:
        record_results(spark, results, results_path(config, ctx), ctx.pipeline.name, table,  # type: ignore[arg-type]
                       f"{app_id}:stop", batch_id)
        raise
