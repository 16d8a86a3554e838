"""Configuration: YAML files under conf/ validated into typed models.

The names below are loaded on first use, so that ``kappalake.config.base`` can be imported by
``kappalake.quality.config`` (which ``kappalake.config.models`` itself imports) without a cycle.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Project": "kappalake.config.loader", "load_pipeline": "kappalake.config.loader",
    "load_project": "kappalake.config.loader", "load_target": "kappalake.config.loader",
    "GoldViewConfig": "kappalake.config.models", "PipelineConfig": "kappalake.config.models",
    "TargetConfig": "kappalake.config.models",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kappalake.config' has no attribute {name!r}")
