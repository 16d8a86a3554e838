"""Run one or more layers of a pipeline as streaming queries in one Spark application."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kappalake.errors import BrokerUnreachableError, KappalakeError
from kappalake.io import hadoopfs
from kappalake.io.delta.stream import Trigger
from kappalake.io.kafka.admin import end_offsets, wait_until_ready
from kappalake.io.kafka.reader import kafka_source_options
from kappalake.ops import batch_metrics
from kappalake.ops.dataloss import DataLossMonitor, broker_log_starts
from kappalake.ops.failures import explain_query_failure, raised_kappalake_error
from kappalake.quality.batch import QualityStop, explain_quality_stop
from kappalake.ops.monitor import RunMonitor
from kappalake.ops.progress import ProgressTracker, QueryTotals
from kappalake.ops.runinfo import write_run_record
from kappalake.ops.stop_signals import JobStopped, StopRequest, stop_after_current_batch
from kappalake.runtime.context import RunContext
from kappalake.config.durations import parse_seconds
from kappalake.ops.maintenance.delta_tables import LOG_RETENTION_DEFAULT, interval
from kappalake.runtime.spark import build_spark, require_connectors

from pyspark.errors import StreamingQueryException

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

LAYERS = ("bronze", "silver", "gold")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    pipeline: str
    layers: tuple[str, ...]
    totals: dict[str, QueryTotals]
    seconds: float
    progress: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lost_offsets: dict[str, int] = field(default_factory=dict)  # per query: offsets skipped as no longer in Kafka


def expand_layers(layer: str) -> tuple[str, ...]:
    """``all`` -> every layer; ``bronze,silver`` -> those, in pipeline order; unknown names rejected."""
    if layer == "all":
        return LAYERS
    names = [name.strip() for name in layer.split(",") if name.strip()]
    unknown = [name for name in names if name not in LAYERS]
    if unknown or not names:
        raise KappalakeError(f"unknown layer {(unknown or [layer])[0]!r}; expected one of {', '.join(LAYERS)}, "
                             "a comma-separated list of them, or all")
    return tuple(name for name in LAYERS if name in names)


def check_source(ctx: RunContext) -> None:
    """Fail early and clearly when the brokers do not answer or a subscribed topic is missing."""
    from kappalake.io.kafka.access import check_access, explain_silent_broker, uses_sasl

    servers = ctx.bootstrap_servers()
    topics = ctx.pipeline.source.topics
    dlq = [ctx.pipeline.dead_letter.kafka_topic] if ctx.pipeline.dead_letter.kafka_topic else []
    if uses_sasl(ctx.kafka_options):  # an authenticated broker: the principal and its ACLs, named when refused
        check_access(servers, ctx.kafka_options, topics, dlq,
                     group_prefix=ctx.pipeline.source.options.get("groupIdPrefix", "spark-kafka-source"))
    try:
        wait_until_ready(servers, timeout=15, options=ctx.kafka_options)
    except BrokerUnreachableError:
        refused = explain_silent_broker(servers, ctx.kafka_options, topics)
        if refused is not None:
            raise refused from None
        raise
    for topic in ctx.pipeline.source.topics:
        try:
            end_offsets(servers, topic, ctx.kafka_options)
        except BrokerUnreachableError as exc:
            raise KappalakeError(f"pipeline {ctx.pipeline.name!r}: {exc}; create it ('kappalake stack up' creates "
                                 "the configured topics locally) or fix source.subscribe") from None


def _start_layer(spark: SparkSession, ctx: RunContext, layer: str, trigger: Trigger) -> StreamingQuery:
    if layer == "gold":
        from kappalake.pipelines.gold import start_gold

        return start_gold(spark, ctx, trigger)
    if layer == "silver":
        from kappalake.pipelines.silver import start_silver

        return start_silver(spark, ctx, trigger)
    from kappalake.pipelines.bronze import start_bronze

    return start_bronze(spark, ctx, trigger)


def checkpoints(ctx: RunContext, layers: Sequence[str]) -> list[str]:
    """Every checkpoint the queries of ``layers`` use in this run."""
    return [ctx.checkpoint_path(layer) for layer in layers]


def refuse_start_position_on_checkpoint(spark: SparkSession, ctx: RunContext, layers: Sequence[str]) -> None:
    """A start position applies to a first start only: a checkpoint already decides where a query goes on."""
    for path in checkpoints(ctx, layers):
        if hadoopfs.list_names(spark, f"{path}/offsets"):
            raise KappalakeError(
                f"a start position was given but the checkpoint {path} exists: the query continues from its "
                "checkpoint and would ignore it. To reprocess a range next to the live query, use 'kappalake "
                f"backfill {ctx.pipeline.name} --layer ...'; to start over, stop the job and delete the checkpoint "
                "(and the tables it wrote) first")


def run_pipeline(ctx: RunContext, layers: Sequence[str], trigger: Trigger,
                 spark: SparkSession | None = None, timeout: float | None = None,
                 on_progress: Callable[[ProgressTracker], None] | None = None,
                 until: Callable[[ProgressTracker], bool] | None = None) -> RunResult:
    """Start ``layers`` and wait: until drained with ``available_now``, else until a query stops or fails,
    ``timeout`` seconds passed, or ``until(progress)`` is true. SIGINT/SIGTERM stop the run after the
    current micro-batch (a second signal: at once) and raise :class:`JobStopped` once the run is closed."""
    with StopRequest() as stop:
        return _run(ctx, layers, trigger, spark, timeout, on_progress, until, stop)


def _run(ctx: RunContext, layers: Sequence[str], trigger: Trigger, spark: SparkSession | None,
         timeout: float | None, on_progress: Callable[[ProgressTracker], None] | None,
         until: Callable[[ProgressTracker], bool] | None, stop: StopRequest) -> RunResult:
    check_source(ctx)
    spark = spark or build_spark(ctx.target, app_name=f"kappalake-{ctx.pipeline.name}")
    stop.arm()
    versions = require_connectors(spark)
    # Tables this run creates get the pipeline's log retention (kappalake maintain sets it on older ones).
    spark.conf.set(LOG_RETENTION_DEFAULT, interval(int(parse_seconds(ctx.pipeline.maintenance.log_retention))))
    if ctx.start_offsets is not None and not ctx.replay:
        refuse_start_position_on_checkpoint(spark, ctx, layers)
    run_monitor = RunMonitor(ctx)
    run_monitor.start(layers)
    tracker = ProgressTracker(on_new=run_monitor.on_progress)
    monitor = DataLossMonitor.for_source(ctx.bootstrap_servers(), kafka_source_options(ctx), ctx.kafka_options)
    started = time.monotonic()
    queries: list[StreamingQuery] = []
    try:
        for layer in layers:
            if stop.requested:
                break
            batch_metrics.reset(f"{ctx.pipeline.name}.{layer}")
            if layer == "gold":
                for view in ctx.pipeline.gold.views:
                    batch_metrics.reset(f"{ctx.pipeline.name}.gold.{view}")
            write_run_record(ctx.runs_dir, layer, pipeline=ctx.pipeline.name,
                             versions=versions.as_dict(), started_at=time.time(), finished_at=None,
                             trigger="availableNow" if trigger.available_now else trigger.interval,
                             table=ctx.table_path(layer), checkpoint=ctx.checkpoint_path(layer), error=None,
                             pid=os.getpid(), live=None, metrics_port=run_monitor.port)
            queries.append(_start_layer(spark, ctx, layer, trigger))
        if queries and not stop.requested:  # erasure requests from the control topic <pipeline>.forget
            from kappalake.pipelines.erasure import start_control_query

            control = start_control_query(spark, ctx, trigger, tuple(layers))
            if control is not None:
                queries.append(control)
        restarts = SchemaRestarts(lambda layer: _start_layer(spark, ctx, layer, trigger), ctx.pipeline.name)
        _await(spark, queries, tracker, timeout, monitor, on_progress, until, stop, restarts)
        if stop.requested:
            stop_after_current_batch(queries, stop)
    except Exception as exc:
        _close_failed(ctx, layers, queries, run_monitor, monitor, exc)
        error = _as_kappalake_error(exc, ctx)
        if error is exc:
            raise
        raise error from exc
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
        tracker.observe(queries)
        monitor.observe(queries)
        run_monitor.close()
    totals = tracker.totals
    for layer in layers:
        layer_totals = totals.get(f"{ctx.pipeline.name}.{layer}")
        write_run_record(ctx.runs_dir, layer, finished_at=time.time(),
                         input_rows=layer_totals.input_rows if layer_totals else 0,
                         batches=layer_totals.batches if layer_totals else 0,
                         lost_offsets=monitor.lost_offsets(f"{ctx.pipeline.name}.{layer}"),
                         stopped_by=stop.name if stop.requested else None,
                         **batch_metrics.snapshot(f"{ctx.pipeline.name}.{layer}"))
    if stop.requested:
        raise JobStopped(_stopped_message(ctx, layers, totals, stop.name), stop.signum or 0)
    lost = {f"{ctx.pipeline.name}.{layer}": monitor.lost_offsets(f"{ctx.pipeline.name}.{layer}") for layer in layers}
    return RunResult(ctx.pipeline.name, tuple(layers), totals, time.monotonic() - started,
                     progress=dict(tracker.history), lost_offsets=lost)


def _close_failed(ctx: RunContext, layers: Sequence[str], queries: list[StreamingQuery], run_monitor: RunMonitor,
                  monitor: DataLossMonitor, exc: BaseException) -> None:
    """Mark the failed queries and close every layer's run record with the failure."""
    message = _failure_message(exc, ctx)
    for query in queries:
        if query.exception() is not None:
            run_monitor.failed(query.name or ctx.pipeline.name, message, str(query.runId))
    for layer in layers:
        write_run_record(ctx.runs_dir, layer, finished_at=time.time(), error=message,
                         lost_offsets=monitor.lost_offsets(f"{ctx.pipeline.name}.{layer}"))


def _as_kappalake_error(exc: BaseException, ctx: RunContext) -> KappalakeError:
    """The failure as the error the CLI prints (its own class when kappalake raised it)."""
    if isinstance(exc, KappalakeError):
        return exc
    message = _failure_message(exc, ctx)
    if explain_quality_stop(str(exc)) is not None:
        return QualityStop(f"pipeline {ctx.pipeline.name!r} stopped: {message}")
    raised = raised_kappalake_error(str(exc))  # raised inside a foreachBatch function: keep its class
    if raised is not None:
        return type(raised)(f"pipeline {ctx.pipeline.name!r} failed: {message}")
    return KappalakeError(f"pipeline {ctx.pipeline.name!r} failed: {message}")


def _stopped_message(ctx: RunContext, layers: Sequence[str], totals: dict[str, QueryTotals], signal_name: str) -> str:
    """One line: what was stopped, after which batch, and where a restart resumes."""
    parts = []
    for layer in layers:
        done = totals.get(f"{ctx.pipeline.name}.{layer}")
        last = done.last_batch_id if done else None
        parts.append(f"{ctx.pipeline.name}.{layer} " + (f"after batch {last}" if last is not None else "before its first batch"))
    where = ", ".join(checkpoints(ctx, layers))
    return (f"stopped on {signal_name}: {', '.join(parts)}; a restart resumes from the checkpoint"
            f"{'s' if len(layers) > 1 else ''} {where}")


def _await(spark: SparkSession, queries: list[StreamingQuery], tracker: ProgressTracker,
           timeout: float | None, monitor: DataLossMonitor | None = None,
           on_progress: Callable[[ProgressTracker], None] | None = None,
           until: Callable[[ProgressTracker], bool] | None = None, stop: StopRequest | None = None,
           restarts: SchemaRestarts | None = None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while any(q.isActive for q in queries):
        if stop is not None and stop.requested:
            return
        tracker.observe(queries)
        if on_progress is not None:
            on_progress(tracker)
        if until is not None and until(tracker):
            return
        if monitor is not None:
            monitor.observe(queries)
        for i, query in enumerate(queries):
            if query.exception() is not None:
                replaced = restarts.replace(query) if restarts is not None else None
                if replaced is None:
                    raise query.exception()  # type: ignore[misc]
                queries[i] = replaced
        if deadline is not None and time.monotonic() > deadline:
            return
        # A query of an earlier run in this session that failed would make awaitAnyTermination raise its
        # exception again: forget it first (failures of these queries are read from query.exception()).
        spark.streams.resetTerminated()
        try:
            spark.streams.awaitAnyTermination(timeout=1)
        except StreamingQueryException:
            pass  # the loop reads the failure from query.exception(): a restart, or raised there
    for i, query in enumerate(queries):
        if query.exception() is not None:
            replaced = restarts.replace(query) if restarts is not None else None
            if replaced is None:
                raise query.exception()  # type: ignore[misc]
            queries[i] = replaced
            _await(spark, queries, tracker, timeout, monitor, on_progress, until, stop, restarts)
            return


class SchemaRestarts:
    """Restart a query that stopped on :class:`SchemaChanged` (records of a writer schema its decoding plan
    lacks): its uncommitted batch runs again with the schema. At most ``limit`` restarts of a layer within
    ``window`` seconds (a loop guard; new schema versions arrive far apart)."""

    def __init__(self, start: Callable[[str], StreamingQuery], pipeline: str, limit: int = 10,
                 window: float = 600.0) -> None:
        self.start = start
        self.pipeline = pipeline
        self.limit = limit
        self.window = window
        self.times: dict[str, list[float]] = {}

    def replace(self, query: StreamingQuery) -> StreamingQuery | None:
        """The restarted query, or None when ``query`` failed for another reason (or restarts too often)."""
        from kappalake.io.registry.gate import SchemaChanged

        raised = raised_kappalake_error(str(query.exception()))
        layer = (query.name or "").rsplit(".", 1)[-1]
        if not isinstance(raised, SchemaChanged) or layer not in LAYERS:
            return None
        now = time.monotonic()
        recent = [t for t in self.times.get(layer, []) if now - t < self.window] + [now]
        self.times[layer] = recent
        if len(recent) > self.limit:
            return None
        log.info("%s", raised)
        return self.start(layer)


def _failure_message(exc: BaseException, ctx: RunContext | None = None) -> str:
    text = str(exc)

    def log_start(topic: str, partition: int) -> int | None:  # asked only when the text reports data loss
        if ctx is None:
            return None
        return broker_log_starts(ctx.bootstrap_servers(), ctx.kafka_options)(topic).get(partition)

    stopped = explain_quality_stop(text)
    if stopped is not None:
        return stopped
    explained = explain_query_failure(text, log_start)
    if explained is not None:
        return explained
    if ctx is not None:
        from kappalake.io.kafka.access import explain_refusal

        refused = explain_refusal(text, ctx.kafka_options)
        if refused is not None:
            return refused
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "===", "JVM stacktrace")):
            return line[:500]
    return type(exc).__name__
