"""What every job needs to know about where it runs: target, data dir, brokers, table paths."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kappalake.config.models import PipelineConfig, TargetConfig
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import LocalStack

LOCAL_STACK = "local-stack"
#: Tables private to one run: a gold backfill keeps its own intake tables beside the live ones.
RUN_SCOPED_TABLES = ("late_events",)


@dataclass(frozen=True)
class RunContext:
    """A pipeline bound to a target, with its derived locations."""

    pipeline: PipelineConfig
    target: TargetConfig
    layout: HomeLayout
    run: str = "live"
    #: First offset per topic and partition of this run (a backfill or a first start at a position).
    start_offsets: dict[str, dict[int, int]] | None = None
    #: Exclusive end offset per topic and partition: records at or past it are not read (bounded replays).
    end_offsets: dict[str, dict[int, int]] | None = None
    #: Gold windows outside [window_from, window_to) are not written (a bounded replay sees them partially).
    window_from: datetime | None = None
    window_to: datetime | None = None
    #: Overrides source.options.maxOffsetsPerTrigger (backfills read in larger batches).
    max_offsets_per_trigger: int | None = None

    @property
    def replay(self) -> bool:
        """A backfill run: Delta writes insert only what the tables do not hold yet."""
        return self.run != "live"

    def bootstrap_servers(self) -> str:
        """The target's brokers; ``local-stack`` means the embedded broker's current address."""
        servers = self.target.kafka.bootstrap_servers
        if servers == LOCAL_STACK:
            return LocalStack(self.layout).bootstrap_servers()
        return servers

    @property
    def kafka_options(self) -> dict[str, str]:
        """``kafka.*`` client settings of the target (security), merged under the pipeline's own."""
        return {**self.target.kafka.options, **{k: v for k, v in self.pipeline.source.options.items()
                                                if k.startswith("kafka.")}}

    def _root(self) -> str:
        return self.target.storage.root.rstrip("/")

    def table_path(self, layer: str) -> str:
        """Delta table location of ``layer`` (bronze, silver, dead_letter, ...)."""
        if layer in RUN_SCOPED_TABLES and self.replay:
            return f"{self._root()}/{self.pipeline.name}/_runs/{self.run}/{layer}"
        configured = getattr(getattr(self.pipeline, layer, None), "path", None)
        return configured or f"{self._root()}/{self.pipeline.name}/{layer}"

    def checkpoint_path(self, layer: str, run: str | None = None) -> str:
        """Checkpoint of ``layer``; backfills use their own ``run`` name so the live query is untouched."""
        return f"{self._root()}/_checkpoints/{self.pipeline.name}/{layer}/{run or self.run}"

    def schema_cache_path(self) -> str:
        """Writer schemas this pipeline's queries fetched from the registry (shared by live runs and backfills)."""
        return f"{self._root()}/_checkpoints/{self.pipeline.name}/_schemas"

    @property
    def runs_dir(self) -> Path:
        """Where run records go: per pipeline for the live run, per backfill run name for a backfill."""
        if self.replay:
            return self.layout.runs / self.pipeline.name / "_backfills" / self.run
        return self.layout.runs / self.pipeline.name
