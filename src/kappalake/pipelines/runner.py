"""Run one or more layers of a pipeline as streaming queries in one Spark application."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kappalake.errors import BrokerUnreachableError, KappalakeError, NotAvailableYet
from kappalake.io.delta.stream import Trigger
from kappalake.io.kafka.admin import end_offsets, wait_until_ready
from kappalake.ops.progress import ProgressTracker, QueryTotals
from kappalake.ops.runinfo import write_run_record
from kappalake.runtime.context import RunContext
from kappalake.runtime.spark import build_spark, require_connectors

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

LAYERS = ("bronze", "silver", "gold")
PENDING_LAYERS = {
    "silver": "issue #3 (bronze and silver: parse, validate, dedupe, dead-letter queue)",
    "gold": "issue #4 (gold: event-time windows upserted into ClickHouse)",
}


@dataclass(frozen=True)
class RunResult:
    pipeline: str
    layers: tuple[str, ...]
    totals: dict[str, QueryTotals]
    seconds: float


def expand_layers(layer: str) -> tuple[str, ...]:
    """``all`` -> every layer; otherwise the one named (validated)."""
    if layer == "all":
        return LAYERS
    if layer not in LAYERS:
        raise KappalakeError(f"unknown layer {layer!r}; expected one of {', '.join(LAYERS)} or all")
    return (layer,)


def check_source(ctx: RunContext) -> None:
    """Fail early and clearly when the brokers do not answer or a subscribed topic is missing."""
    servers = ctx.bootstrap_servers()
    wait_until_ready(servers, timeout=15, options=ctx.kafka_options)
    for topic in ctx.pipeline.source.topics:
        try:
            end_offsets(servers, topic, ctx.kafka_options)
        except BrokerUnreachableError as exc:
            raise KappalakeError(f"pipeline {ctx.pipeline.name!r}: {exc}; create it ('kappalake stack up' creates "
                                 "the configured topics locally) or fix source.subscribe") from None


def _start_layer(spark: SparkSession, ctx: RunContext, layer: str, trigger: Trigger) -> StreamingQuery:
    if layer in PENDING_LAYERS:
        raise NotAvailableYet(f"the {layer} layer is not implemented yet; it lands with {PENDING_LAYERS[layer]}")
    from kappalake.pipelines.bronze import start_bronze

    return start_bronze(spark, ctx, trigger)


def run_pipeline(ctx: RunContext, layers: Sequence[str], trigger: Trigger,
                 spark: SparkSession | None = None, timeout: float | None = None) -> RunResult:
    """Start ``layers`` and wait: until drained with ``available_now``, else until a query stops or fails."""
    for layer in layers:
        if layer in PENDING_LAYERS:
            _start_layer(None, ctx, layer, trigger)  # type: ignore[arg-type]  # raises NotAvailableYet
    check_source(ctx)
    spark = spark or build_spark(ctx.target, app_name=f"kappalake-{ctx.pipeline.name}")
    versions = require_connectors(spark)
    tracker = ProgressTracker()
    started = time.monotonic()
    queries: list[StreamingQuery] = []
    try:
        for layer in layers:
            write_run_record(ctx.runs_dir, layer, pipeline=ctx.pipeline.name,
                             versions=versions.as_dict(), started_at=time.time(), finished_at=None,
                             trigger="availableNow" if trigger.available_now else trigger.interval,
                             table=ctx.table_path(layer), checkpoint=ctx.checkpoint_path(layer), error=None)
            queries.append(_start_layer(spark, ctx, layer, trigger))
        _await(spark, queries, tracker, timeout)
    except Exception as exc:
        message = _failure_message(exc)
        for layer in layers:
            write_run_record(ctx.runs_dir, layer, finished_at=time.time(), error=message)
        if isinstance(exc, KappalakeError):
            raise
        raise KappalakeError(f"pipeline {ctx.pipeline.name!r} failed: {message}") from exc
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
        tracker.observe(queries)
    totals = tracker.totals
    for layer in layers:
        layer_totals = totals.get(f"{ctx.pipeline.name}.{layer}")
        write_run_record(ctx.runs_dir, layer, finished_at=time.time(),
                         input_rows=layer_totals.input_rows if layer_totals else 0,
                         batches=layer_totals.batches if layer_totals else 0)
    return RunResult(ctx.pipeline.name, tuple(layers), totals, time.monotonic() - started)


def _await(spark: SparkSession, queries: list[StreamingQuery], tracker: ProgressTracker,
           timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while any(q.isActive for q in queries):
        tracker.observe(queries)
        for query in queries:
            if query.exception() is not None:
                raise query.exception()  # type: ignore[misc]
        if deadline is not None and time.monotonic() > deadline:
            return
        spark.streams.awaitAnyTermination(timeout=1)
        spark.streams.resetTerminated()
    for query in queries:
        if query.exception() is not None:
            raise query.exception()  # type: ignore[misc]


def _failure_message(exc: BaseException) -> str:
    text = str(exc)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "===", "JVM stacktrace")):
            return line[:500]
    return type(exc).__name__
