"""Gold windows as pure DataFrame functions: window assignment, the late split, metric aggregation.

The late rule, shared by the intake (which records late events) and the view queries (which aggregate
the rest), so both always agree: an event misses a window when the window's end is at or before the
view's cutoff, ``_wm_base_<time column> - watermark``, where ``_wm_base_<time column>`` is the highest
event time the gold intake had seen before the micro-batch that brought the event (Spark's own watermark
rule). Session windows
use the single-event session ``[t, t + gap)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from kappalake.config.models import GoldViewConfig, MetricConfig
from kappalake.errors import ConfigError

WINDOW_COLUMNS = ("window_start", "window_end")


def _interval(duration: str) -> Column:
    return F.expr(f"INTERVAL {duration}")


def wm_base(time_column: str) -> str:
    """The column holding the highest ``time_column`` seen before the row's micro-batch."""
    return f"_wm_base_{time_column}"


def cutoff(time_column: str, delay: str) -> Column:
    """The view's cutoff for each row: base minus ``delay`` (null before the first batch: nothing is late)."""
    return F.col(wm_base(time_column)) - _interval(delay)


def assign_windows(events: DataFrame, view: GoldViewConfig, time_column: str, delay: str) -> DataFrame:
    """Each event once per window it falls in (``window_start``, ``window_end``) with ``_closed``: true when
    that window had already closed for the view when the event arrived (session views: its own session)."""
    spec = view.window
    if spec.kind == "session":
        assert spec.gap is not None
        framed = events.withColumns({"window_start": F.col(time_column),
                                     "window_end": F.col(time_column) + _interval(spec.gap)})
    else:
        assert spec.size is not None
        window = (F.window(time_column, spec.size, spec.slide) if spec.kind == "sliding"
                  else F.window(time_column, spec.size))
        framed = (events.withColumn("_window", window)
                  .withColumns({"window_start": F.col("_window.start"), "window_end": F.col("_window.end")})
                  .drop("_window"))
    closed = F.coalesce(F.col("window_end") <= cutoff(time_column, delay), F.lit(False))
    return framed.withColumn("_closed", closed)


def late_events(events: DataFrame, view_name: str, view: GoldViewConfig, time_column: str, delay: str,
                id_column: str) -> DataFrame:
    """The (event, window) pairs that missed ``view_name``: one row each, with the event as JSON."""
    framed = assign_windows(events, view, time_column, delay).where(F.col("_closed"))
    payload = [c for c in events.columns if not c.startswith("_wm_base_")]
    return framed.select(
        F.lit(view_name).alias("view"),
        F.col(id_column).cast("string").alias("event_id"),
        F.col(time_column).alias("event_time"),
        F.to_json(F.struct(*[F.col(k) for k in view.group_by])).alias("group_key"),
        "window_start", "window_end",
        cutoff(time_column, delay).alias("watermark"),
        F.to_json(F.struct(*payload)).alias("event"),
    )


def metric_column(name: str, metric: MetricConfig) -> Column:
    """The aggregate expression of one configured metric, named ``name``."""
    column = F.col(metric.column) if metric.column else None
    if metric.fn == "count":
        expr = F.count(column if column is not None else F.lit(1))
    elif metric.fn == "custom":
        expr = load_hook(metric.hook or "")(metric.column)
    else:
        assert column is not None
        builders: dict[str, Callable[[Column], Column]] = {
            "sum": F.sum, "avg": F.avg, "min": F.min, "max": F.max, "stddev": F.stddev_samp,
            "approx_count_distinct": F.approx_count_distinct,
            "percentile": lambda c: F.percentile_approx(c, metric.percentile),
        }
        expr = builders[metric.fn](column)
    return expr.alias(name)


def load_hook(reference: str) -> Callable[[str | None], Column]:
    """Import a custom-aggregate hook ``module:function``; it takes the metric's column name and returns
    an aggregate Column."""
    module_name, _, attribute = reference.partition(":")
    try:
        hook = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"metric hook {reference!r} cannot be loaded: {exc}") from None
    if not callable(hook):
        raise ConfigError(f"metric hook {reference!r} is not a function")
    return hook  # type: ignore[no-any-return]


def aggregate_windows(framed: DataFrame, view: GoldViewConfig) -> DataFrame:
    """Group framed events by (group keys, window) into one row of metrics each; apply ``having``."""
    metrics = [metric_column(name, metric) for name, metric in view.metrics.items()]
    rows = framed.groupBy(*view.group_by, *WINDOW_COLUMNS).agg(*metrics)
    if view.having:
        rows = rows.where(F.expr(view.having))
    return rows.select(*view.group_by, *WINDOW_COLUMNS, *view.metrics)


def aggregate_sessions(events: DataFrame, view: GoldViewConfig, time_column: str) -> DataFrame:
    """Session windows: group on ``session_window`` (Spark merges sessions within the gap)."""
    assert view.window.gap is not None
    metrics = [metric_column(name, metric) for name, metric in view.metrics.items()]
    rows = (events.groupBy(*view.group_by, F.session_window(time_column, view.window.gap).alias("_session"))
            .agg(*metrics)
            .withColumns({"window_start": F.col("_session.start"), "window_end": F.col("_session.end")}))
    if view.having:
        rows = rows.where(F.expr(view.having))
    return rows.select(*view.group_by, *WINDOW_COLUMNS, *view.metrics)
