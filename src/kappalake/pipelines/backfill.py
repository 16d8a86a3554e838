"""Kappa replays: the live job's DataFrame code over a bounded offset range, under its own checkpoint.

A backfill named ``RUN`` checkpoints under ``_checkpoints/<pipeline>/<layer>/RUN``; the live query is
untouched. Its plan (offset ranges per partition, window bounds) is saved with the run record on the
first start, so a rerun with the same name resumes the same range from its checkpoint.

Idempotence: bronze and silver replays insert only rows their tables do not hold yet (MERGE on
(topic, partition, offset), on the event id, on the dead letter's source offset); gold replays write
their windows under a newer run generation, so the first batch that touches a window replaces the live
state and later batches of the backfill merge into it; later live batches merge their new events into
the backfill's windows.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kappalake.errors import ConfigError, KappalakeError
from kappalake.io.delta.stream import Trigger
from kappalake.io.kafka.offsets import OffsetRange, OffsetResolver, Offsets, resolve_ranges
from kappalake.ops.progress import ProgressTracker
from kappalake.pipelines.runner import RunResult, run_pipeline
from kappalake.runtime.context import RunContext

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

BACKFILL_LAYERS = ("bronze", "silver", "gold")
DEFAULT_MAX_OFFSETS_PER_TRIGGER = 2_000_000


@dataclass(frozen=True)
class BackfillPlan:
    """What a backfill reads and writes; saved on the first start of a run."""

    pipeline: str
    layer: str
    name: str
    ranges: tuple[OffsetRange, ...]
    window_from: str | None = None  # ISO; gold writes only windows starting at or after it
    window_to: str | None = None  # ISO; gold writes only windows ending at or before it
    max_offsets_per_trigger: int = DEFAULT_MAX_OFFSETS_PER_TRIGGER
    arguments_digest: str = ""  # of the command's range arguments: a rerun must give the same ones

    @property
    def records(self) -> int:
        return sum(r.records for r in self.ranges)

    def starts(self) -> Offsets:
        out: Offsets = {}
        for r in self.ranges:
            out.setdefault(r.topic, {})[r.partition] = r.start
        return out

    def ends(self) -> Offsets:
        out: Offsets = {}
        for r in self.ranges:
            out.setdefault(r.topic, {})[r.partition] = r.end
        return out

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ranges": [asdict(r) for r in self.ranges]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackfillPlan:
        return cls(**{**data, "ranges": tuple(OffsetRange(**r) for r in data["ranges"])})


def default_name(layer: str, arguments: dict[str, Any]) -> str:
    """A name derived from the arguments: rerunning the same command resumes the same backfill."""
    digest = hashlib.sha256(json.dumps([layer, arguments], sort_keys=True, default=str).encode()).hexdigest()
    return f"backfill-{layer}-{digest[:10]}"


def plan_backfill(ctx: RunContext, layer: str, *, from_timestamp: datetime | None = None,
                  from_offsets: Offsets | None = None, from_earliest: bool = False,
                  to_timestamp: datetime | None = None, to_offsets: Offsets | None = None,
                  name: str | None = None, max_offsets_per_trigger: int = DEFAULT_MAX_OFFSETS_PER_TRIGGER,
                  resolver: OffsetResolver | None = None) -> BackfillPlan:
    """The plan of a backfill: the saved one when ``name`` ran before with the same arguments, else a new
    one resolved against the brokers."""
    if layer not in BACKFILL_LAYERS:
        raise ConfigError(f"--layer {layer!r}: a backfill runs one of {', '.join(BACKFILL_LAYERS)}")
    topics = ctx.pipeline.source.topics
    if not topics:
        raise ConfigError(f"pipeline {ctx.pipeline.name!r} subscribes by pattern; a backfill needs source.subscribe "
                          "or source.assign to know its partitions")
    arguments = {"from_timestamp": from_timestamp, "from_offsets": from_offsets, "from_earliest": from_earliest,
                 "to_timestamp": to_timestamp, "to_offsets": to_offsets}
    name = name or default_name(layer, arguments)
    saved = load_plan(ctx, name)
    if saved is not None:
        if saved.layer != layer or saved.arguments_digest != _digest(arguments):
            raise ConfigError(f"backfill {name!r} exists with other arguments (layer {saved.layer}); rerun it with "
                              "the same arguments to resume, or choose another --name")
        return saved
    resolver = resolver or OffsetResolver(ctx.bootstrap_servers(), ctx.kafka_options)
    ranges = resolve_ranges(resolver, topics, from_timestamp=from_timestamp, from_offsets=from_offsets,
                            from_earliest=from_earliest, to_timestamp=to_timestamp, to_offsets=to_offsets)
    return BackfillPlan(ctx.pipeline.name, layer, name, tuple(ranges),
                        window_from=from_timestamp.isoformat() if from_timestamp else None,
                        window_to=to_timestamp.isoformat() if to_timestamp else None,
                        max_offsets_per_trigger=max_offsets_per_trigger, arguments_digest=_digest(arguments))


def _digest(arguments: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(arguments, sort_keys=True, default=str).encode()).hexdigest()


def _plan_path(ctx: RunContext, name: str) -> Path:
    """Beside the run's checkpoints when storage is local; else in the local runs dir (a rerun on another
    machine then plans again: the checkpoint still decides where the run continues)."""
    root = ctx.target.storage.root
    if "://" not in root or root.startswith("file://"):
        return Path(root.removeprefix("file://")) / "_checkpoints" / ctx.pipeline.name / "_backfills" / name / "plan.json"
    return ctx.layout.runs / ctx.pipeline.name / "_backfills" / name / "plan.json"


def load_plan(ctx: RunContext, name: str) -> BackfillPlan | None:
    """The plan saved by the first start of backfill ``name``."""
    path = _plan_path(ctx, name)
    if not path.exists():
        return None
    return BackfillPlan.from_json(json.loads(path.read_text()))


def save_plan(ctx: RunContext, plan: BackfillPlan) -> None:
    path = _plan_path(ctx, plan.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan.as_json(), indent=1))


def backfill_context(ctx: RunContext, plan: BackfillPlan) -> RunContext:
    """The run context of ``plan``: own checkpoint, bounded offsets, window bounds, large batches."""
    return replace(ctx, run=plan.name, start_offsets=plan.starts(), end_offsets=plan.ends(),
                   window_from=datetime.fromisoformat(plan.window_from) if plan.window_from else None,
                   window_to=datetime.fromisoformat(plan.window_to) if plan.window_to else None,
                   max_offsets_per_trigger=plan.max_offsets_per_trigger)


@dataclass(frozen=True)
class BackfillSummary:
    plan: BackfillPlan
    records_read: int
    rows_written: dict[str, int]
    seconds: float
    result: RunResult


def run_backfill(ctx: RunContext, plan: BackfillPlan,
                 spark: SparkSession | None = None, on_progress: Callable[[int], None] | None = None) -> BackfillSummary:
    """Run ``plan`` to its end offsets (``availableNow``) and summarise what it read and wrote."""
    if ctx.replay:
        raise KappalakeError("run_backfill expects the live context")
    if plan.records == 0:
        raise KappalakeError(f"backfill {plan.name!r} has nothing to read: every partition's range is empty")
    if load_plan(ctx, plan.name) is None:
        save_plan(ctx, plan)
    run_ctx = backfill_context(ctx, plan)
    reader = f"{ctx.pipeline.name}.{plan.layer}"

    def progress(tracker: ProgressTracker) -> None:
        totals = tracker.totals.get(reader)
        if on_progress is not None and totals is not None:
            on_progress(min(totals.input_rows, plan.records))

    from kappalake.runtime.spark import build_spark

    spark = spark or build_spark(ctx.target, app_name=f"kappalake-{ctx.pipeline.name}-{plan.name}")
    tables = {name: run_ctx.table_path(name) for name in WRITES[plan.layer]}
    before = {name: _count(spark, path) for name, path in tables.items()}
    started = time.monotonic()
    result = run_pipeline(run_ctx, [plan.layer], Trigger(available_now=True), spark=spark, on_progress=progress)
    totals = result.totals.get(reader)
    read = min(totals.input_rows, plan.records) if totals else 0
    if on_progress is not None:
        on_progress(read)
    written = {name: _count(spark, path) - before[name] for name, path in tables.items()}
    if plan.layer == "gold":
        from kappalake.ops import batch_metrics

        for view_name, view in ctx.pipeline.gold.views.items():
            rows = batch_metrics.snapshot(f"{reader}.{view_name}").get("clickhouse_rows", 0)
            written[f"ClickHouse {view.clickhouse.table}"] = rows
    return BackfillSummary(plan, read, written, time.monotonic() - started, result)


#: The Delta tables each layer's backfill writes (gold's are private to the run).
WRITES = {"bronze": ("bronze",), "silver": ("silver", "dead_letter"), "gold": ("late_events",)}


def _count(spark: SparkSession, path: str) -> int:
    from kappalake.io.delta.batch import table_exists

    return int(spark.read.format("delta").load(path).count()) if table_exists(spark, path) else 0
