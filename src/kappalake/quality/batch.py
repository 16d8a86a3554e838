"""Batch-level validation of a micro-batch with Great Expectations (GX 1.x), and the ``on_fail: stop`` gate.

Every batch costs one Spark aggregate, the *profile*: the row count, the rows failing each row-kind
(and ``unique``) expectation, and ``max`` of each freshness column. Row-level expectations are
reported from it (unexpected counts; they are never re-evaluated row by row in GX). Batch-level
expectations are judged by Great Expectations, with an ephemeral context, datasource and suite
built once per validator and reused for every batch, in one of two engines:

* ``profile`` (default): GX validates the one-row metrics profile (pandas datasource; no Spark
  job) with ``ExpectColumnValuesToBeBetween`` per expectation: unexpected rows <= 0, row count in
  [min, max], freshness lag <= max_lag.
* ``gx_spark``: GX's Spark datasource runs the native expectations on the micro-batch DataFrame:
  ``ExpectColumnValuesToBeUnique``, ``ExpectTableRowCountToBeBetween``, ``ExpectColumnMaxToBeBetween``
  (freshness: min bound ``now - max_lag``, a suite parameter set per batch), ``ExpectColumnValuesToNotBeNull``,
  ``...ToBeInSet``, ``...ToBeBetween``, ``...ToMatchRegex`` and ``UnexpectedRowsExpectation`` (sql).
  Exact GX semantics, but GX issues several Spark jobs per expectation (~1-3 s per 10k-row batch
  on 2 cores; bench/quality.py measures both).

A batch without rows (Spark runs no-data batches to move the watermark) is not validated.
``BatchValidator.run(df, batch_id, where=...)`` profiles only the rows ``where`` selects and counts
the others (``profile.skipped``), so the silver writer's own valid/rejected count folds into the
profile: the expectations then cost no extra Spark job besides what GX itself runs.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from kappalake.errors import KappalakeError
from kappalake.quality.config import ROW_KINDS, ExpectationConfig, QualityConfig

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


@dataclass(frozen=True)
class ValidationResult:
    """One expectation's verdict on one micro-batch."""

    suite: str
    expectation: str
    success: bool
    observed_value: str
    batch_id: int
    validated_at: datetime
    level: str
    kind: str = ""
    on_fail: str = ""


@dataclass(frozen=True)
class BatchProfile:
    """What one Spark aggregate measured on a batch."""

    rows: int
    #: Rows that failed each row-kind or unique expectation (by name).
    unexpected: dict[str, int] = field(default_factory=dict)
    #: max(column) of each freshness expectation as epoch seconds (None: no non-null value).
    max_time: dict[str, float | None] = field(default_factory=dict)
    #: Rows failing at least one row-level expectation with ``on_fail: quarantine``.
    quarantined: int = 0
    #: Rows left out by ``where`` (e.g. records that failed parsing), not validated.
    skipped: int = 0
    #: Values of the caller's own aggregates computed in the same pass (``extra`` of :func:`profile`).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchOutcome:
    profile: BatchProfile
    results: list[ValidationResult]


class QualityStop(KappalakeError):
    """An ``on_fail: stop`` expectation failed: the query stops before writing the batch."""

    exit_code = 8


def _counted(expectation: ExpectationConfig) -> bool:
    return expectation.kind in ROW_KINDS or expectation.kind == "unique"


def profile(df: DataFrame, config: QualityConfig, where: Column | None = None,
            extra: dict[str, Column] | None = None) -> BatchProfile:
    """Measure the rows of ``df`` that ``where`` selects (default: all) in one Spark aggregate.

    ``extra``: more aggregate expressions over ``df``'s columns (e.g. event-time quantiles) evaluated
    in the same pass; their values come back in ``BatchProfile.extra``."""
    from pyspark.sql import functions as F

    from kappalake.quality.rows import check

    selected = F.col("_w")
    columns = [(F.lit(True) if where is None else F.coalesce(where, F.lit(False))).alias("_w")]
    aggregates = [F.count_if(selected).alias("_rows"), F.count_if(~selected).alias("_skipped")]
    index = {e.name: i for i, e in enumerate(config.expectations)}
    for i, expectation in enumerate(config.expectations):
        if _counted(expectation):
            columns.append((~check(expectation, where)).alias(f"_f{i}"))
            aggregates.append(F.count_if(selected & F.col(f"_f{i}")).alias(f"_f{i}"))
        elif expectation.kind == "freshness":
            columns.append((F.unix_micros(F.col(str(expectation.column)).cast("timestamp")) / 1e6).alias(f"_t{i}"))
            aggregates.append(F.max(F.when(selected, F.col(f"_t{i}"))).alias(f"_t{i}"))
    quarantine = [F.col(f"_f{index[e.name]}") for e in config.row_level if e.on_fail == "quarantine"]
    if quarantine:
        aggregates.append(F.count_if(selected & F.greatest(*quarantine, F.lit(False))).alias("_quarantined"))
    extra = extra or {}
    aggregates += [column.alias(f"_x_{name}") for name, column in extra.items()]
    row = df.select("*", *columns).agg(*aggregates).first()
    assert row is not None
    unexpected, max_time = {}, {}
    for i, expectation in enumerate(config.expectations):
        if _counted(expectation):
            unexpected[expectation.name] = int(row[f"_f{i}"])
        elif expectation.kind == "freshness":
            value = row[f"_t{i}"]
            max_time[expectation.name] = None if value is None else float(value)
    return BatchProfile(int(row["_rows"]), unexpected, max_time, int(row["_quarantined"]) if quarantine else 0,
                        int(row["_skipped"]), {name: row[f"_x_{name}"] for name in extra})


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _freshness_observed(column: str, max_epoch: float | None, now: datetime) -> str:
    if max_epoch is None:
        return f"no non-null {column} values"
    return f"lag {now.timestamp() - max_epoch:.1f}s (max {column} {_iso(max_epoch)})"


def _build_context() -> Any:
    """An ephemeral GX context: in memory, no analytics, no progress bars."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False))
    return gx.get_context(mode="ephemeral", project_config=config)


def _fresh_after(name: str) -> str:
    return f"kappalake_{name}_fresh_after"


def _native_expectation(e: ExpectationConfig) -> Any:
    """The GX expectation of ``e`` on the micro-batch DataFrame (engine ``gx_spark``)."""
    import great_expectations.expectations as gxe

    meta = {"kappalake": e.name}
    if e.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=e.column, meta=meta)
    if e.kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(column=e.column, value_set=list(e.values or []), meta=meta)
    if e.kind == "between":
        return gxe.ExpectColumnValuesToBeBetween(column=e.column, min_value=e.min, max_value=e.max, meta=meta)
    if e.kind == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(column=e.column, regex=e.pattern, meta=meta)
    if e.kind == "unique":
        return gxe.ExpectColumnValuesToBeUnique(column=e.column, meta=meta)
    if e.kind == "row_count":
        return gxe.ExpectTableRowCountToBeBetween(min_value=e.min, max_value=e.max, meta=meta)
    if e.kind == "freshness":
        return gxe.ExpectColumnMaxToBeBetween(column=e.column, min_value={"$PARAMETER": _fresh_after(e.name)},
                                              meta=meta)
    expression = str(e.expression).replace("{", "{{").replace("}", "}}")
    return gxe.UnexpectedRowsExpectation(
        unexpected_rows_query=f"SELECT * FROM {{batch}} WHERE NOT coalesce(({expression}), true)", meta=meta)


def _profile_expectation(e: ExpectationConfig) -> Any:
    """The GX expectation of ``e`` over its metric column in the one-row profile (engine ``profile``)."""
    import great_expectations.expectations as gxe

    low, high = (e.min, e.max) if e.kind == "row_count" else (None, e.max_lag_seconds or 0)
    return gxe.ExpectColumnValuesToBeBetween(column=e.name, min_value=low, max_value=high,
                                             meta={"kappalake": e.name})


class BatchValidator:
    """Validates micro-batches against ``config``; the GX context and suite are built once and reused."""

    def __init__(self, config: QualityConfig, suite_name: str, engine: str | None = None) -> None:
        self.config = config
        self.suite_name = suite_name
        self.engine = engine or config.engine
        self._batch_definition: Any = None
        self._suite: Any = None
        if config.batch_level:
            self._build()

    def _build(self) -> None:
        import great_expectations as gx

        context = _build_context()
        if self.engine == "gx_spark":
            source = context.data_sources.add_spark(name="kappalake_spark")
            make = _native_expectation
        else:
            source = context.data_sources.add_pandas(name="kappalake_profile")
            make = _profile_expectation
        asset = source.add_dataframe_asset(name="micro_batch")
        self._batch_definition = asset.add_batch_definition_whole_dataframe("whole_batch")
        self._suite = context.suites.add(gx.ExpectationSuite(name=self.suite_name))
        for expectation in self.config.batch_level:
            self._suite.add_expectation(make(expectation))

    def validate(self, df: DataFrame, batch_id: int, now: datetime | None = None) -> list[ValidationResult]:
        """Results of every expectation on ``df`` (none for an empty batch)."""
        return self.run(df, batch_id, now).results

    def run(self, df: DataFrame, batch_id: int, now: datetime | None = None,
            where: Column | None = None, extra: dict[str, Column] | None = None) -> BatchOutcome:
        """Profile the rows of ``df`` that ``where`` selects (default: all), then judge every expectation.

        ``now`` (default: the wall clock) anchors freshness. With ``where`` the profile also counts the
        rows left out (``profile.skipped``), so one aggregate can replace a writer's own counts."""
        now = now or datetime.now(timezone.utc)
        measured = profile(df, self.config, where, extra)
        if measured.rows == 0 or not self.config.expectations:
            return BatchOutcome(measured, [])
        if where is not None:
            df = df.where(where)
        verdicts = self._judge(df, measured, now) if self.config.batch_level else {}
        results = []
        for e in self.config.expectations:
            if e.level == "row":
                count = measured.unexpected[e.name]
                success, observed = count == 0, f"{count} of {measured.rows} rows unexpected"
            else:
                success, observed = verdicts[e.name]
            results.append(ValidationResult(self.suite_name, e.name, success, observed, batch_id, now, e.level,
                                            e.kind, str(e.on_fail)))
        return BatchOutcome(measured, results)

    def _judge(self, df: DataFrame, measured: BatchProfile, now: datetime) -> dict[str, tuple[bool, str]]:
        if self.engine == "gx_spark":
            local_now = now.astimezone().replace(tzinfo=None)  # Spark collects timestamps as naive local time
            parameters = {_fresh_after(e.name): local_now - timedelta(seconds=e.max_lag_seconds or 0)
                          for e in self.config.batch_level if e.kind == "freshness"}
            batch = self._batch_definition.get_batch(batch_parameters={"dataframe": df})
            suite_result = batch.validate(self._suite, expectation_parameters=parameters,
                                          result_format={"result_format": "BASIC", "partial_unexpected_count": 0})
            return {r.expectation_config.meta["kappalake"]: self._native_verdict(r, measured, local_now)
                    for r in suite_result.results}
        import pandas as pd

        metrics: dict[str, float] = {}
        for e in self.config.batch_level:
            if e.kind == "row_count":
                metrics[e.name] = measured.rows
            elif e.kind == "freshness":
                latest = measured.max_time[e.name]
                metrics[e.name] = math.inf if latest is None else now.timestamp() - latest
            else:
                metrics[e.name] = measured.unexpected[e.name]
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": pd.DataFrame([metrics])})
        suite_result = batch.validate(self._suite, result_format="BOOLEAN_ONLY")
        verdicts = {}
        for r in suite_result.results:
            e = next(x for x in self.config.batch_level if x.name == r.expectation_config.meta["kappalake"])
            if e.kind == "row_count":
                observed = f"{measured.rows} rows"
            elif e.kind == "freshness":
                observed = _freshness_observed(str(e.column), measured.max_time[e.name], now)
            else:
                observed = f"{measured.unexpected[e.name]} of {measured.rows} rows unexpected"
            verdicts[e.name] = (bool(r.success) and not _raised(r), observed if not _raised(r) else _error(r))
        return verdicts

    def _native_verdict(self, r: Any, measured: BatchProfile, local_now: datetime) -> tuple[bool, str]:
        if _raised(r):
            return False, _error(r)
        kind = r.expectation_config.type
        result = r.result or {}
        if kind == "expect_table_row_count_to_be_between":
            observed = f"{result.get('observed_value')} rows"
        elif kind == "expect_column_max_to_be_between":
            value = result.get("observed_value")
            column = r.expectation_config.kwargs.get("column")
            if value is None:
                observed = f"no non-null {column} values"
            else:
                latest = value.timestamp() if isinstance(value, datetime) else float(value)
                observed = _freshness_observed(str(column), latest, local_now.astimezone())
        elif kind == "unexpected_rows_expectation":
            observed = f"{result.get('observed_value')} of {measured.rows} rows unexpected"
        else:
            observed = f"{result.get('unexpected_count')} of {result.get('element_count')} rows unexpected"
        return bool(r.success), observed


def _raised(r: Any) -> bool:
    info = r.exception_info or {}
    if "raised_exception" in info:
        return bool(info.get("raised_exception"))
    return any(isinstance(v, dict) and v.get("raised_exception") for v in info.values())


def _error(r: Any) -> str:
    info = r.exception_info or {}
    messages = [info.get("exception_message")] if "exception_message" in info else \
        [v.get("exception_message") for v in info.values() if isinstance(v, dict)]
    text = "; ".join(str(m) for m in messages if m) or "unknown error"
    return "error: " + text.splitlines()[0][:300]


def enforce(results: list[ValidationResult], config: QualityConfig) -> None:
    """Raise :class:`QualityStop` when an ``on_fail: stop`` expectation failed (call before writing)."""
    stopping = {e.name: e for e in config.expectations if e.on_fail == "stop"}
    failed = [r for r in results if not r.success and r.expectation in stopping]
    if not failed:
        return
    first = failed[0]
    reasons = "; ".join(f"{r.expectation} ({stopping[r.expectation].describe()}) observed {r.observed_value}"
                        for r in failed)
    raise QualityStop(
        f"data quality: suite {first.suite} batch {first.batch_id} failed {len(failed)} expectation(s) with "
        f"on_fail: stop: {reasons}. Nothing of batch {first.batch_id} was written; the query stopped and "
        "replays this batch from its checkpoint when restarted, after the rule or the data is fixed "
        "(or the expectation is set to on_fail: record).")


_STOP_TEXT = re.compile(r"QualityStop: (data quality: .*?on_fail: record\)\.)", re.S)


def explain_quality_stop(text: str) -> str | None:
    """The :class:`QualityStop` message inside a failed streaming query's text (foreachBatch wraps it)."""
    match = _STOP_TEXT.search(text)
    return " ".join(match.group(1).split()) if match else None


def metric_counts(outcome: BatchOutcome) -> dict[str, int]:
    """Counters for the job metrics (``ops.batch_metrics.add``): quarantined rows, checks run and failed."""
    return {"quarantined_rows": outcome.profile.quarantined,
            "quality_checks": len(outcome.results),
            "quality_failures": sum(not r.success for r in outcome.results)}
