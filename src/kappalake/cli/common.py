"""Shared CLI plumbing: global options, consoles, loading the config for a command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console

from kappalake.config.loader import default_conf_dir, default_target, load_pipeline, load_target
from kappalake.runtime.context import RunContext
from kappalake.runtime.paths import HomeLayout

console = Console()
err_console = Console(stderr=True)


@dataclass
class GlobalOptions:
    conf_dir: Path
    target: str

    def context(self, pipeline: str) -> RunContext:
        """Load and validate the target and pipeline ``pipeline``."""
        target = load_target(self.conf_dir, self.target)
        return RunContext(load_pipeline(pipeline, self.conf_dir, target.name), target, HomeLayout.from_env())


def global_options(ctx: typer.Context) -> GlobalOptions:
    obj = ctx.find_root().obj
    if isinstance(obj, GlobalOptions):
        return obj
    return GlobalOptions(default_conf_dir(), default_target())
