"""Load a ``jobs/<name>.py`` entry point as a module, as a scheduler would run the file."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_job(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"kappalake_job_{name}", REPO / "jobs" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
