"""Live monitoring of a run: Prometheus metrics, the ``kappalake_metrics`` ClickHouse table, and the
live status in each layer's run record (read by ``kappalake status``)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from kappalake.ops import batch_metrics
from kappalake.ops.metrics import BATCH_COUNTS, PipelineMetrics, kafka_offsets
from kappalake.ops.prometheus_targets import register_metrics_target, unregister_metrics_target
from kappalake.ops.runinfo import write_run_record
from kappalake.runtime.context import RunContext

log = logging.getLogger(__name__)
COUNTED = BATCH_COUNTS


def layer_of(query_name: str) -> str:
    """``payments.gold.card_velocity_1m`` -> ``gold``."""
    parts = query_name.split(".")
    return parts[1] if len(parts) > 1 else query_name


class RunMonitor:
    """Fed every new progress record of the run's queries (``ProgressTracker.on_new``)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.pipeline = ctx.pipeline.name
        self.metrics = PipelineMetrics()
        self.port: int | None = None
        self._counts: dict[str, dict[str, int]] = {}
        self._pending_rows: list[dict[str, Any]] = []
        self._live: dict[str, dict[str, Any]] = {}
        self._last_flush = 0.0
        self._ch = None
        self._target: tuple[Any, ...] | None = None

    def start(self, layers: Sequence[str] = ()) -> int | None:
        """Serve the Prometheus endpoint when the target configures a port (and register it for the local
        stack's Prometheus); connect the metrics table."""
        monitoring = self.ctx.target.monitoring
        if monitoring.port is not None:
            self.port = self.metrics.serve(monitoring.port, monitoring.host)
            log.warning("%s: Prometheus metrics on http://%s:%d/metrics", self.pipeline, monitoring.host, self.port)
            self._target = (self.ctx.layout, self.pipeline, "+".join(layers) or "all", monitoring.host, self.port)
            try:
                register_metrics_target(*self._target, run=self.ctx.run)
            except OSError as exc:  # monitoring never stops a pipeline
                log.warning("could not register the metrics endpoint for Prometheus: %s", exc)
                self._target = None
        if monitoring.clickhouse_table:
            from kappalake.io.clickhouse.client import connect
            from kappalake.ops.metrics_table import ensure_metrics_table

            try:
                self._ch = connect(self.ctx.target.clickhouse.dsn)
                ensure_metrics_table(self._ch)
            except Exception as exc:  # noqa: BLE001 - monitoring never stops a pipeline
                log.warning("kappalake_metrics table unavailable (%s); metrics go to Prometheus only", exc)
                self._ch = None
        return self.port

    def on_progress(self, progress: dict[str, Any]) -> None:
        """Fold one new progress record into Prometheus, the metrics table and the run record."""
        from kappalake.ops.metrics_table import metrics_row

        name = progress.get("name") or f"{self.pipeline}.unknown"
        layer = layer_of(name)
        self.metrics.observe_progress(self.pipeline, layer, progress)
        counts = self._new_counts(name)
        if counts:
            self.metrics.observe_batch_counts(self.pipeline, layer, **counts)
        latency = batch_metrics.latency(name, int(progress.get("batchId", -1)))
        if latency:
            self.metrics.observe_latency(self.pipeline, layer, "event_time", latency.get("sample", []))
        if int(progress.get("numInputRows") or 0) > 0:
            self._pending_rows.append(metrics_row(self.pipeline, layer, progress, counts,
                                                  {k: v for k, v in latency.items() if k != "sample"}))
        if name == f"{self.pipeline}.{layer}":
            status = live_status(progress, latency, batch_metrics.snapshot(name))
            if int(progress.get("numInputRows") or 0) == 0 and name in self._live:
                # An idle trigger: keep the last batch's figures, refresh the lag.
                status = {**self._live[name], "lag": status["lag"]}
            self._live[name] = status
            write_run_record(self.ctx.runs_dir, layer, pid=os.getpid(), metrics_port=self.port, live=status)
        self.flush()

    def _new_counts(self, name: str) -> dict[str, int]:
        now = {k: v for k, v in batch_metrics.snapshot(name).items() if k in COUNTED}
        before = self._counts.get(name, {})
        self._counts[name] = now
        return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0) > 0}

    def flush(self, force: bool = False) -> None:
        """Write pending metric rows to ClickHouse (at most every 5 s unless forced)."""
        if self._ch is None or not self._pending_rows or (not force and time.monotonic() - self._last_flush < 5):
            return
        from kappalake.ops.metrics_table import write_metrics

        rows, self._pending_rows = self._pending_rows, []
        try:
            write_metrics(self._ch, rows)
        except Exception as exc:  # noqa: BLE001 - monitoring never stops a pipeline
            log.warning("could not write %d rows to kappalake_metrics: %s", len(rows), exc)
        self._last_flush = time.monotonic()

    def failed(self, query_name: str, message: str, run_id: str | None) -> None:
        self.metrics.mark_failed(self.pipeline, layer_of(query_name), query_name, message, run_id=run_id)

    def close(self) -> None:
        if self._target is not None:
            try:
                unregister_metrics_target(*self._target, run=self.ctx.run)
            except OSError as exc:
                log.warning("could not unregister the metrics endpoint: %s", exc)
        self.flush(force=True)
        self.metrics.close()


def live_status(progress: dict[str, Any], latency: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """What ``kappalake status`` shows for a layer: last batch, rates, lag per partition, watermark, latency."""
    lag: dict[str, int] = {}
    for source in progress.get("sources") or []:
        latest, end = kafka_offsets(source.get("latestOffset")), kafka_offsets(source.get("endOffset"))
        for (topic, partition), offset in latest.items():
            if (topic, partition) in end:
                lag[f"{topic}/{partition}"] = max(0, offset - end[(topic, partition)])
    return {
        "last_batch_at": progress.get("timestamp"), "batch_id": progress.get("batchId"),
        "input_rows_per_second": progress.get("inputRowsPerSecond"),
        "processed_rows_per_second": progress.get("processedRowsPerSecond"),
        "lag": lag, "watermark": (progress.get("eventTime") or {}).get("watermark"),
        "latency_p95_s": latency.get("p95"), "dead_letter_rows": counts.get("dead_letter_rows", 0),
        "late_rows": counts.get("late_rows", 0),
        **state_figures(progress),
    }


def state_figures(progress: dict[str, Any]) -> dict[str, int]:
    """Rows and bytes the query's state stores hold: memory, plus RocksDB's files on local disk."""
    operators = progress.get("stateOperators") or []
    disk = sum(int((op.get("customMetrics") or {}).get("rocksdbTotalSstFilesSize")
                   or (op.get("customMetrics") or {}).get("rocksdbSstFileSize") or 0) for op in operators)
    return {"state_rows": sum(int(op.get("numRowsTotal") or 0) for op in operators),
            "state_bytes": sum(int(op.get("memoryUsedBytes") or 0) for op in operators) + disk}
