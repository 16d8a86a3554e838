"""Per-micro-batch partial aggregates of a gold view: the mergeable state of each metric.

A gold view no longer keeps its windows in Spark state. Each micro-batch aggregates only its own
on-time (event, window) pairs into one row per (group keys, window) of *partial states*, and the sink
merges those into the window's stored state in ClickHouse (see :mod:`kappalake.transforms.window_merge`).
Every metric therefore needs a state that merges exactly:

========================  ==============================================  =======================
metric                    state columns (per window, per batch)           merged by
========================  ==============================================  =======================
count                     ``<m>`` long                                    sum
sum                       ``<m>`` (Spark's sum type)                      sum (null + null = null)
min / max                 ``<m>``                                         min / max
avg                       ``<m>__n`` long, ``<m>__sum`` double            sums, then sum / n
stddev (sample)           ``<m>__n``, ``<m>__mean``, ``<m>__m2`` doubles  Chan et al. parallel variance
approx_count_distinct     ``<m>__hll`` binary (DataSketches HLL, lg_k 12)  HLL union
percentile                ``<m>__values`` array<double>                   concatenation
custom                    ``<m>`` (the hook's aggregate)                  the metric's ``merge``
========================  ==============================================  =======================
"""

from __future__ import annotations

from dataclasses import dataclass
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from kappalake.config.models import GoldViewConfig, MetricConfig
from kappalake.transforms.gold import WINDOW_COLUMNS, load_hook

HLL_LG_K = 12


@dataclass(frozen=True)
class StateColumn:
    """One state column of a metric: its name and the per-batch aggregate that fills it."""

    name: str
    aggregate: Column


def state_columns(name: str, metric: MetricConfig) -> list[StateColumn]:
    """The state columns of metric ``name`` (see the module table)."""
    column = F.col(metric.column) if metric.column else None
    fn = metric.fn
    if fn == "count":
        return [StateColumn(name, F.count(column if column is not None else F.lit(1)))]
    if fn == "custom":
        assert metric.merge is not None
        return [StateColumn(name, load_hook(metric.hook or "")(metric.column))]
    assert column is not None
    value = column.cast("double")
    if fn in ("sum", "min", "max"):
        builder = {"sum": F.sum, "min": F.min, "max": F.max}[fn]
        return [StateColumn(name, builder(column))]  # type: ignore[arg-type]
    if fn == "avg":
        return [StateColumn(f"{name}__n", F.count(column)),
                StateColumn(f"{name}__sum", F.sum(value))]
    if fn == "stddev":
        # (n, mean, M2) per batch; merged with the parallel-variance formula, never from sums of squares.
        return [StateColumn(f"{name}__n", F.count(column).cast("double")),
                StateColumn(f"{name}__mean", F.avg(value)),
                StateColumn(f"{name}__m2", F.var_pop(value) * F.count(column))]
    if fn == "approx_count_distinct":
        return [StateColumn(f"{name}__hll", F.hll_sketch_agg(column.cast("string"), HLL_LG_K))]
    if fn == "percentile":
        return [StateColumn(f"{name}__values", F.collect_list(value))]
    raise AssertionError(f"unknown metric fn {fn!r}")


def view_state_columns(view: GoldViewConfig) -> list[StateColumn]:
    """Every state column of ``view``, in metric order."""
    return [state for name, metric in view.metrics.items() for state in state_columns(name, metric)]


def partial_states(framed: DataFrame, view: GoldViewConfig) -> DataFrame:
    """One row per (group keys, window) of a batch's on-time pairs with the partial state of every metric."""
    states = view_state_columns(view)
    return framed.groupBy(*view.group_by, *WINDOW_COLUMNS).agg(*[s.aggregate.alias(s.name) for s in states])


def session_fragments(events: DataFrame, view: GoldViewConfig, time_column: str) -> DataFrame:
    """Session views: the sessions *within* one batch (Spark's ``session_window``, batch mode) as partial
    states; the sink merges fragments that overlap stored sessions of the same key."""
    assert view.window.gap is not None
    states = view_state_columns(view)
    return (events.groupBy(*view.group_by, F.session_window(time_column, view.window.gap).alias("_session"))
            .agg(*[s.aggregate.alias(s.name) for s in states])
            .withColumns({"window_start": F.col("_session.start"), "window_end": F.col("_session.end")})
            .select(*view.group_by, *WINDOW_COLUMNS, *[s.name for s in states]))
