"""A small JSON record per pipeline layer of the last run: versions, start, end, rows. Read by ``status``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

# The runner's thread and batch threads (a query waiting on the schema registry) update one record.
_WRITE = threading.Lock()


def run_record_path(runs_dir: Path, layer: str) -> Path:
    return runs_dir / layer / "last-run.json"


def write_run_record(runs_dir: Path, layer: str, **fields: Any) -> None:
    """Merge ``fields`` into the layer's record (atomic replace; one writer at a time in this process)."""
    path = run_record_path(runs_dir, layer)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _WRITE:
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


def process_alive(pid: object) -> bool:
    """True if ``pid`` is a running process of this machine."""
    import os

    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def is_running(record: dict[str, Any] | None) -> bool:
    """True while the run of ``record`` is open and its process alive."""
    return bool(record) and record.get("finished_at") is None and process_alive(record.get("pid"))


def running_writers(runs_dir: Path, layers: tuple[str, ...]) -> dict[str, int]:
    """The layers (and ``backfill:<name>`` runs) of a pipeline's ``runs_dir`` whose job is running: their pids."""
    found = {}
    for layer in layers:
        record = read_run_record(runs_dir, layer)
        if is_running(record):
            found[layer] = int(record["pid"])  # type: ignore[index]
    backfills = runs_dir / "_backfills"
    for run in sorted(backfills.iterdir()) if backfills.is_dir() else []:
        for layer in layers:
            record = read_run_record(run, layer)
            if is_running(record):
                found[f"backfill:{run.name}"] = int(record["pid"])  # type: ignore[index]
    return found
