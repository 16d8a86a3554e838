"""What the soak benchmark samples each minute, read from outside the job the way an operator would.

Batch durations from the job's ``kappalake_metrics`` rows, memory from /proc (the job's process tree),
state and lag from its run records, Delta files and log bytes from the file system and delta-rs,
checkpoint bytes, ClickHouse active parts, and the time dashboard queries take on a client of their own.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from kappalake.ops.runinfo import read_run_record

DELTA_TABLES = ("bronze", "silver", "dead_letter", "late_events", "quality_results")


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def tree_rss_bytes(pid: int) -> int:
    """Memory of ``pid`` and all its descendants (the Python driver, its JVM, Python workers): the sum of
    their proportional set sizes (PSS), so pages forked workers share are counted once."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def dir_bytes(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``."""
    files = size = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                size += os.path.getsize(os.path.join(root, name))
                files += 1
            except OSError:
                continue
    return files, size


@dataclass
class DeltaFigures:
    active_files: int
    files_on_disk: int
    log_bytes: int
    log_files: int


def delta_figures(path: Path) -> DeltaFigures | None:
    """Active files of the current version (delta-rs), data files on disk, and the _delta_log's size."""
    from kappalake.ops.tables import delta_table_stats

    stats = delta_table_stats(str(path))
    if stats is None:
        return None
    log_files, log_bytes = dir_bytes(path / "_delta_log")
    on_disk = sum(1 for _, _, names in os.walk(path) for n in names if n.endswith(".parquet")) - sum(
        1 for n in os.listdir(path / "_delta_log") if n.endswith(".parquet"))
    return DeltaFigures(stats.files, on_disk, log_bytes, log_files)


def batch_durations(ch, pipeline: str, since: float, until: float) -> list[float]:  # type: ignore[no-untyped-def]
    """Wall times (ms) of the data batches of every query of ``pipeline`` triggered in [since, until)."""
    rows = ch.query("SELECT batch_duration_ms FROM kappalake_metrics FINAL WHERE pipeline = {p:String} "
                    "AND ts >= fromUnixTimestamp64Milli({a:Int64}) AND ts < fromUnixTimestamp64Milli({b:Int64})",
                    parameters={"p": pipeline, "a": int(since * 1000), "b": int(until * 1000)}).result_rows
    return [float(r[0]) for r in rows]


def dashboard_queries(table: str, key: str) -> list[str]:
    """What a live dashboard asks of a gold table: last 15 minutes of one key, top-N, a total per minute."""
    recent = "window_start >= now64(6, 'UTC') - INTERVAL 15 MINUTE"
    return [
        f"SELECT window_start, txn_count, amount_sum FROM `{table}` FINAL WHERE card_id = '{key}' AND {recent} "
        "ORDER BY window_start",
        f"SELECT card_id, sum(amount_sum) AS total FROM `{table}` FINAL WHERE {recent} GROUP BY card_id "
        "ORDER BY total DESC LIMIT 10",
        f"SELECT window_start, sum(txn_count) FROM `{table}` FINAL WHERE {recent} GROUP BY window_start "
        "ORDER BY window_start",
    ]


def query_times_ms(ch, table: str, rounds: int = 5) -> list[float]:  # type: ignore[no-untyped-def]
    """Run the dashboard queries ``rounds`` times against ``table``; each one's wall time in ms."""
    top = ch.query(f"SELECT card_id FROM `{table}` ORDER BY window_start DESC LIMIT 1").result_rows
    key = top[0][0] if top else "none"
    times = []
    for _ in range(rounds):
        for sql in dashboard_queries(table, key):
            began = time.perf_counter()
            ch.query(sql)
            times.append((time.perf_counter() - began) * 1000)
    return times


def active_parts(ch, tables: list[str]) -> dict[str, int]:  # type: ignore[no-untyped-def]
    rows = ch.query("SELECT table, count() FROM system.parts WHERE database = currentDatabase() AND active "
                    "AND has({t:Array(String)}, table) GROUP BY table", parameters={"t": tables}).result_rows
    return {str(t): int(n) for t, n in rows}


def job_state(runs_dir: Path) -> tuple[int, int]:
    """(state rows, state bytes) summed over the layers' last progress (their run records)."""
    rows = size = 0
    for layer in ("bronze", "silver", "gold"):
        live = (read_run_record(runs_dir, layer) or {}).get("live") or {}
        rows += int(live.get("state_rows") or 0)
        size += int(live.get("state_bytes") or 0)
    return rows, size


def committed_offsets(checkpoint: Path) -> int:
    """Records a streaming query has committed: the sum of the end offsets of its last committed batch."""
    import json

    commits = [int(p.name) for p in (checkpoint / "commits").iterdir() if p.name.isdigit()] \
        if (checkpoint / "commits").is_dir() else []
    if not commits:
        return 0
    last = (checkpoint / "offsets" / str(max(commits))).read_text().strip().splitlines()[-1]
    return sum(int(offset) for partitions in json.loads(last).values() for offset in partitions.values())


def lag(checkpoints: Path, produced: int) -> int:
    """The largest Kafka lag (records produced but not committed) over the bronze, silver and gold queries."""
    return max(produced - committed_offsets(checkpoints / layer / "live") for layer in ("bronze", "silver", "gold"))


def slope_per_hour(values: list[float]) -> float:
    """Least-squares slope of one-per-minute ``values``, per hour (0 for fewer than 2 points)."""
    points = [(i, v) for i, v in enumerate(values) if v == v]
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    return 60 * sum((x - mean_x) * (y - mean_y) for x, y in points) / denominator if denominator else 0.0
