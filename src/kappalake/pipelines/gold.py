"""Gold job: event-time windows over the pipeline's events, upserted into ClickHouse exactly once.

Two stages in one Spark application:

* the **intake** query (``<pipeline>.gold``) reads the same records as silver (Kafka, or the bronze table
  with ``gold.source: bronze``), parses, validates, pseudonymises and dedupes them like silver, stamps each
  micro-batch's rows with the highest event time seen before it (``_wm_base_<time column>``), writes the
  (event, window) pairs that arrive after their window closed to the **late-events** Delta table, and
  appends the batch to the ``gold_events`` Delta table (both idempotent per batch);
* one **view** query per gold view (``<pipeline>.gold.<view>``) streams ``gold_events``, drops exactly the
  pairs the intake recorded as late, aggregates in update output mode with a watermark that bounds the
  state, and hands the changed windows to :class:`~kappalake.io.clickhouse.sink.GoldSink`.

Both stages apply the one late rule of :mod:`kappalake.transforms.gold`, so every (event, window) pair
is either aggregated or recorded late, never silently dropped. The view query's own watermark lags the
intake's cutoff by at least the window size, so Spark drops nothing on its own.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from kappalake.config.durations import parse_seconds
from kappalake.config.models import GoldViewConfig
from kappalake.errors import ConfigError
from kappalake.io import hadoopfs
from kappalake.io.clickhouse.client import connect
from kappalake.io.clickhouse.schema import GoldTable, ensure_table
from kappalake.io.clickhouse.sink import GoldSink
from kappalake.io.delta.batch import append_idempotent, create_if_missing, table_exists
from kappalake.io.delta.stream import Trigger
from kappalake.ops import batch_metrics
from kappalake.ops.latency import event_time_quantiles, latency_after_commit
from kappalake.pipelines.quality_gate import check_expressions, effective, enforce_or_record, results_path
from kappalake.pipelines.silver import pii_key, source_records
from kappalake.quality.batch import BatchValidator, metric_counts
from kappalake.quality.config import QualityConfig
from kappalake.quality.results import record_results
from kappalake.runtime.binding import QueryBinding
from kappalake.runtime.context import RunContext
from kappalake.transforms.gold import (
    aggregate_sessions, aggregate_windows, assign_windows, late_events, wm_base,
)
from kappalake.transforms.parse import parse_events
from kappalake.transforms.pii import pseudonymise
from kappalake.transforms.silver import dedupe_within_watermark, to_silver, with_dedupe_columns

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)

EVENTS_TABLE = "gold_events"
LATE_TABLE = "late_events"


def time_columns(ctx: RunContext) -> list[str]:
    """The event-time fields the pipeline's views window on (each gets its own watermark base)."""
    pipeline = ctx.pipeline
    return sorted({pipeline.view_time(view) for view in pipeline.gold.views.values()})


class EventTimeHighWater:
    """The highest event time per time column after each intake batch, in small files beside the
    checkpoint; batch N reads the value left by the latest batch before N, so a replay sees what the
    first attempt saw."""

    KEEP = 100

    def __init__(self, spark: SparkSession, directory: str) -> None:
        self.spark = spark
        self.directory = directory
        self._cache: dict[int, dict[str, str]] | None = None

    def _load(self) -> dict[int, dict[str, str]]:
        if self._cache is None:
            self._cache = {}
            for name in hadoopfs.list_names(self.spark, self.directory):
                if name.endswith(".json") and name[:-5].isdigit():
                    text = hadoopfs.read_text(self.spark, f"{self.directory}/{name}")
                    if text:
                        self._cache[int(name[:-5])] = json.loads(text)
        return self._cache

    def before(self, batch_id: int) -> dict[str, str]:
        """The high water (ISO timestamps per time column) left by the latest batch before ``batch_id``."""
        earlier = [b for b in self._load() if b < batch_id]
        return dict(self._load()[max(earlier)]) if earlier else {}

    def record(self, batch_id: int, values: dict[str, str]) -> None:
        cache = self._load()
        hadoopfs.write_text(self.spark, f"{self.directory}/{batch_id}.json", json.dumps(values))
        cache[batch_id] = values
        for old in [b for b in cache if b < batch_id - self.KEEP]:
            hadoopfs.delete(self.spark, f"{self.directory}/{old}.json")
            del cache[old]


class GoldIntakeWriter(QueryBinding):
    """The ``foreachBatch`` function of the gold intake query."""

    def __init__(self, ctx: RunContext, key: bytes | None, high_water: EventTimeHighWater) -> None:
        super().__init__()
        self.ctx = ctx
        self.key = key
        self.high_water = high_water
        self.query_name = f"{ctx.pipeline.name}.gold"

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        app_id = f"kappalake:{self.ctx.pipeline.name}:gold:{self.query_id}"
        base = self.high_water.before(batch_id)
        events = stamp(intake_rows(batch.where(F.size("_errors") == 0), self.ctx, self.key), self.ctx, base)
        events = events.persist()
        try:
            late = late_rows(events, self.ctx, batch_id)
            late = late.persist()
            late_count = late.count()
            stats = events.agg(F.count(F.lit(1)).alias("rows"),
                               event_time_quantiles(F.col(self.ctx.pipeline.events.time)).alias("_event_times"),
                               *[F.max(c).cast("string").alias(c) for c in time_columns(self.ctx)]).first()
            late_path = self.ctx.table_path(LATE_TABLE)
            if late_count or not table_exists(batch.sparkSession, late_path):
                append_idempotent(late, late_path, app_id, batch_id)
            late.unpersist()
            append_idempotent(events, self.ctx.table_path(EVENTS_TABLE), app_id, batch_id)
            high = dict(base)
            for column in time_columns(self.ctx):
                if stats[column] is not None and (column not in high or stats[column] > high[column]):
                    high[column] = stats[column]
            self.high_water.record(batch_id, high)
            batch_metrics.add(self.query_name, valid_rows=int(stats["rows"]), late_rows=late_count)
            batch_metrics.set_latency(self.query_name, batch_id, **latency_after_commit(stats["_event_times"]))
            if late_count:
                log.warning("%s batch %d: %d (event, window) pairs arrived after their window closed; "
                            "recorded in %s", self.query_name, batch_id, late_count, late_path)
        finally:
            events.unpersist()


def intake_rows(valid: DataFrame, ctx: RunContext, key: bytes | None) -> DataFrame:
    """Valid parsed records as silver rows (typed fields, pseudonymised, lineage)."""
    rows = to_silver(valid, ctx.pipeline.events)
    if key is not None:
        rows = pseudonymise(rows, ctx.pipeline.silver.pii.fields, key)
    return rows


def stamp(rows: DataFrame, ctx: RunContext, base: dict[str, str]) -> DataFrame:
    """Add the watermark base columns (the high water before this batch; null on the first batch)."""
    return rows.withColumns({wm_base(c): F.lit(base.get(c)).cast("timestamp") for c in time_columns(ctx)})


def late_rows(events: DataFrame, ctx: RunContext, batch_id: int) -> DataFrame:
    """The late (event, window) pairs of all views of the pipeline, with where they came from."""
    pipeline = ctx.pipeline
    parts = [late_events(events, name, view, pipeline.view_time(view), pipeline.view_watermark(view),
                         pipeline.events.id) for name, view in pipeline.gold.views.items()]
    late = parts[0]
    for part in parts[1:]:
        late = late.unionByName(part)
    return late.withColumns({"pipeline": F.lit(pipeline.name), "pipeline_version": F.lit(pipeline.version),
                             "batch_id": F.lit(batch_id).cast("long"), "detected_at": F.current_timestamp()})


def _require_views(ctx: RunContext) -> None:
    if not ctx.pipeline.gold.views:
        raise ConfigError(f"pipeline {ctx.pipeline.name!r} declares no gold views (gold.views); nothing to run "
                          "for the gold layer")


def start_gold_intake(spark: SparkSession, ctx: RunContext, trigger: Trigger) -> StreamingQuery:
    """Start the intake query; create the gold events and late-events tables if missing."""
    _require_views(ctx)
    pipeline = ctx.pipeline
    key = pii_key(ctx)
    parsed = parse_events(source_records(spark, ctx, pipeline.gold.source), pipeline.events)
    time_column = pipeline.events.time if pipeline.silver.dedupe_time == "event_time" else "kafka_timestamp"
    deduped = dedupe_within_watermark(with_dedupe_columns(parsed, pipeline.events.id, time_column),
                                      pipeline.silver.watermark)
    # Empty tables up front, so the view queries can start streaming them at once.
    shape = stamp(intake_rows(parsed, ctx, key), ctx, {})
    create_if_missing(spark.createDataFrame([], shape.schema), ctx.table_path(EVENTS_TABLE))
    create_if_missing(spark.createDataFrame([], late_rows(shape, ctx, 0).schema), ctx.table_path(LATE_TABLE))
    writer = GoldIntakeWriter(ctx, key, EventTimeHighWater(spark, ctx.checkpoint_path("gold") + "/_high_water"))
    query = (deduped.writeStream.foreachBatch(writer).queryName(writer.query_name)
             .option("checkpointLocation", ctx.checkpoint_path("gold"))
             .trigger(**trigger.as_kwargs()).start())
    writer.bind(str(query.id))
    return query


def view_frame(events: DataFrame, ctx: RunContext, view: GoldViewConfig) -> DataFrame:
    """The streaming aggregate of one view over the gold events (update mode, watermark-bounded state)."""
    pipeline = ctx.pipeline
    time_column, delay = pipeline.view_time(view), pipeline.view_watermark(view)
    framed = assign_windows(events, view, time_column, delay).where(~F.col("_closed"))
    if view.window.kind == "session":
        framed = framed.drop("window_start", "window_end").withWatermark(time_column, delay)
        return aggregate_sessions(framed, view, time_column)
    # The view's watermark trails the intake's cutoff by the window size: Spark itself drops nothing.
    lag = parse_seconds(delay) + parse_seconds(view.window.size or "0 seconds")
    return aggregate_windows(framed.withWatermark("window_end", f"{int(lag)} seconds"), view)


def bounded(frame: DataFrame, ctx: RunContext) -> DataFrame:
    """A bounded replay writes only windows wholly inside its time range (``ctx.window_from/to``): a
    window it sees only part of would overwrite the complete live row."""
    if ctx.window_from is not None:
        frame = frame.where(F.col("window_start") >= F.lit(ctx.window_from))
    if ctx.window_to is not None:
        frame = frame.where(F.col("window_end") <= F.lit(ctx.window_to))
    return frame


class GoldViewWriter(QueryBinding):
    """A gold view's ``foreachBatch`` when it declares expectations: validate the changed windows, stop
    before the ClickHouse write on a failed ``on_fail: stop``, write, then record the results."""

    def __init__(self, ctx: RunContext, view_name: str, quality: QualityConfig, sink: GoldSink) -> None:
        super().__init__()
        self.ctx = ctx
        self.table = f"gold.{view_name}"
        self.query_name = f"{ctx.pipeline.name}.gold.{view_name}"
        self.quality = quality
        self.validator = BatchValidator(quality, f"{ctx.pipeline.name}.{self.table}")
        self.sink = sink

    def bind(self, query_id: str) -> None:
        super().bind(query_id)
        self.sink.bind(query_id)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        app_id = f"kappalake:{self.ctx.pipeline.name}:{self.table}:{self.query_id}"
        batch = batch.persist()
        try:
            outcome = self.validator.run(batch, batch_id)
            enforce_or_record(outcome.results, self.quality, self.ctx, self.table, app_id, batch_id,
                              batch.sparkSession)
            self.sink(batch, batch_id)
            record_results(batch.sparkSession, outcome.results, results_path(self.quality, self.ctx),
                           self.ctx.pipeline.name, self.table, app_id, batch_id)
            batch_metrics.add(self.query_name, **metric_counts(outcome))
        finally:
            batch.unpersist()


def gold_table(frame: DataFrame, view: GoldViewConfig) -> GoldTable:
    return GoldTable.from_schema(view.clickhouse.table, frame.schema, tuple(view.group_by))


def start_gold_views(spark: SparkSession, ctx: RunContext, trigger: Trigger,
                     sink_options: dict[str, object] | None = None) -> list[StreamingQuery]:
    """Start one query per gold view; create or migrate its ClickHouse table first."""
    _require_views(ctx)
    ch = connect(ctx.target.clickhouse.dsn)
    layer_name = f"{ctx.pipeline.name}.gold"
    queries = []
    for name, view in ctx.pipeline.gold.views.items():
        events = spark.readStream.format("delta").load(ctx.table_path(EVENTS_TABLE))
        frame = bounded(view_frame(events, ctx, view), ctx)
        table = gold_table(frame, view)
        ensure_table(ch, table)

        def written(batch_id: int, rows: int, _name: str = name) -> None:
            batch_metrics.add(layer_name, clickhouse_rows=rows)
            batch_metrics.add(f"{layer_name}.{_name}", clickhouse_rows=rows)

        sink = GoldSink(ch, table, on_written=written, **(sink_options or {}))  # type: ignore[arg-type]
        quality = effective(view.expectations, ctx)
        writer: GoldSink | GoldViewWriter = sink
        if quality.expectations:
            check_expressions(frame, quality, f"{ctx.pipeline.name} gold.views.{name}.expectations")
            writer = GoldViewWriter(ctx, name, quality, sink)
        query = (frame.writeStream.outputMode("update").foreachBatch(writer).queryName(f"{layer_name}.{name}")
                 .option("checkpointLocation", ctx.checkpoint_path(f"gold.{name}"))
                 .trigger(**trigger.as_kwargs()).start())
        writer.bind(str(query.id))
        queries.append(query)
    return queries

