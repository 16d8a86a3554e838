"""What every job needs to know about where it runs: target, data dir, brokers, table paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kappalake.config.models import PipelineConfig, TargetConfig
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import LocalStack

LOCAL_STACK = "local-stack"


@dataclass(frozen=True)
class RunContext:
    """A pipeline bound to a target, with its derived locations."""

    pipeline: PipelineConfig
    target: TargetConfig
    layout: HomeLayout

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
        configured = getattr(getattr(self.pipeline, layer, None), "path", None)
        return configured or f"{self._root()}/{self.pipeline.name}/{layer}"

    def checkpoint_path(self, layer: str, run: str = "live") -> str:
        """Checkpoint of ``layer``; backfills use their own ``run`` name so the live query is untouched."""
        return f"{self._root()}/_checkpoints/{self.pipeline.name}/{layer}/{run}"

    @property
    def runs_dir(self) -> Path:
        return self.layout.runs / self.pipeline.name
