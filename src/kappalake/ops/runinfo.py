"""A small JSON record per pipeline layer of the last run: versions, start, end, rows. Read by ``status``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def run_record_path(runs_dir: Path, layer: str) -> Path:
    return runs_dir / layer / "last-run.json"


def write_run_record(runs_dir: Path, layer: str, **fields: Any) -> None:
    """Merge ``fields`` into the layer's record (atomic replace)."""
    path = run_record_path(runs_dir, layer)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = read_run_record(runs_dir, layer) or {}
    record.update(fields, updated_at=time.time())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    tmp.replace(path)


def read_run_record(runs_dir: Path, layer: str) -> dict[str, Any] | None:
    path = run_record_path(runs_dir, layer)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
