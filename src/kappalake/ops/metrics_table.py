"""The ``kappalake_metrics`` ClickHouse table: one row per executed micro-batch per query, for dashboards.

``ReplacingMergeTree`` ordered by (pipeline, query, run_id, batch_id): observing a batch twice keeps
one row. Columns are documented in :data:`COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from kappalake.io.clickhouse.client import ClickHouse
from kappalake.ops.metrics import kafka_offsets

TABLE = "kappalake_metrics"

#: (name, ClickHouse type, meaning)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ts", "DateTime64(3, 'UTC')", "trigger time of the batch (progress timestamp)"),
    ("pipeline", "LowCardinality(String)", "pipeline name"),
    ("layer", "LowCardinality(String)", "bronze, silver or gold"),
    ("query", "LowCardinality(String)", "streaming query name: <pipeline>.<layer>[.<view>]"),
    ("run_id", "String", "Spark runId (changes on every restart)"),
    ("batch_id", "Int64", "micro-batch id"),
    ("input_rows", "Int64", "rows read by the batch"),
    ("input_rows_per_second", "Float64", "arrival rate"),
    ("processed_rows_per_second", "Float64", "processing rate"),
    ("batch_duration_ms", "Int64", "wall time of the batch"),
    ("watermark", "Nullable(DateTime64(3, 'UTC'))", "event-time watermark after the batch"),
    ("state_rows", "Int64", "rows in state stores"),
    ("state_memory_bytes", "Int64", "state store memory"),
    ("rows_dropped_by_watermark", "Int64", "rows stateful operators dropped as late"),
    ("consumer_lag", "Int64", "offsets behind the latest offset, all partitions (Kafka sources)"),
    ("dead_letter_rows", "Int64", "rows dead-lettered by the batch"),
    ("late_rows", "Int64", "late (event, window) pairs recorded by the batch"),
    ("latency_p50_s", "Nullable(Float64)", "median event time to commit delay of the batch's rows"),
    ("latency_p95_s", "Nullable(Float64)", "95th percentile of that delay"),
    ("latency_max_s", "Nullable(Float64)", "largest delay"),
)


def ddl() -> str:
    columns = ",\n  ".join(f"`{name}` {type_}" for name, type_, _ in COLUMNS)
    return (f"CREATE TABLE IF NOT EXISTS {TABLE} (\n  {columns}\n) ENGINE = ReplacingMergeTree\n"
            "PARTITION BY toYYYYMM(ts) ORDER BY (pipeline, query, run_id, batch_id)")


def ensure_metrics_table(ch: ClickHouse) -> None:
    """Create ``kappalake_metrics`` if missing."""
    ch.command(ddl())


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _lag(sources: list[Mapping[str, Any]]) -> int:
    total = 0
    for source in sources:
        latest, end = kafka_offsets(source.get("latestOffset")), kafka_offsets(source.get("endOffset"))
        total += sum(max(0, offset - end[key]) for key, offset in latest.items() if key in end)
    return total


def metrics_row(pipeline: str, layer: str, progress: Mapping[str, Any], counts: Mapping[str, int] | None = None,
                latency: Mapping[str, float] | None = None) -> dict[str, Any]:
    """One ``kappalake_metrics`` row from a StreamingQueryProgress dict and the batch's own counts."""
    states = progress.get("stateOperators") or []
    counts = counts or {}
    latency = latency or {}
    return {
        "ts": _time(progress.get("timestamp")) or datetime.now(timezone.utc),
        "pipeline": pipeline, "layer": layer, "query": progress.get("name") or f"{pipeline}.{layer}",
        "run_id": str(progress.get("runId", "")), "batch_id": int(progress.get("batchId", -1)),
        "input_rows": int(progress.get("numInputRows") or 0),
        "input_rows_per_second": float(progress.get("inputRowsPerSecond") or 0.0),
        "processed_rows_per_second": float(progress.get("processedRowsPerSecond") or 0.0),
        "batch_duration_ms": int(progress.get("batchDuration") or (progress.get("durationMs") or {}).get("triggerExecution") or 0),
        "watermark": _time((progress.get("eventTime") or {}).get("watermark")),
        "state_rows": sum(int(s.get("numRowsTotal") or 0) for s in states),
        "state_memory_bytes": sum(int(s.get("memoryUsedBytes") or 0) for s in states),
        "rows_dropped_by_watermark": sum(int(s.get("numRowsDroppedByWatermark") or 0) for s in states),
        "consumer_lag": _lag(progress.get("sources") or []),
        "dead_letter_rows": int(counts.get("dead_letter_rows", 0)),
        "late_rows": int(counts.get("late_rows", 0)),
        "latency_p50_s": latency.get("p50"), "latency_p95_s": latency.get("p95"), "latency_max_s": latency.get("max"),
    }


def write_metrics(ch: ClickHouse, rows: list[dict[str, Any]]) -> None:
    """Insert rows (one insert for all)."""
    if not rows:
        return
    names = [name for name, _, _ in COLUMNS]
    with ch.lock:
        ch.client.insert(TABLE, [[row[n] for n in names] for row in rows], column_names=names)
