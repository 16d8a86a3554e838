"""Prometheus metrics for streaming pipelines, fed from Spark's query progress.

``PipelineMetrics`` owns a private ``CollectorRegistry`` (nothing touches the global one), so several
instances (tests, several pipelines in one process) never collide. Its main input is one
``StreamingQueryProgress`` as a dict: ``json.loads(query._jsq.lastProgress().json())``.

Labels: ``pipeline`` and ``layer`` (bronze/silver/gold) on every series; ``query`` (the streaming
query name, ``<pipeline>.<layer>`` in kappalake) on the series read from progress; ``topic`` and
``partition`` on Kafka lag. Metrics (names are stable; alerts in ``deploy/prometheus/alerts.yml``
use them):

Counters (``observe_progress``; each executed micro-batch is counted once per ``runId``+``batchId``,
however often its progress is observed; Spark's idle heartbeats, reported without running a batch,
add nothing):

- ``kappalake_batches_total{pipeline,layer,query}``: micro-batches executed.
- ``kappalake_input_rows_total{pipeline,layer,query}``: rows read from the sources (``numInputRows``).
- ``kappalake_output_rows_total{pipeline,layer,query}``: rows the sink reports written
  (``sink.numOutputRows``; sinks that report -1 add nothing).
- ``kappalake_rows_dropped_by_watermark_total{pipeline,layer,query}``: late rows stateful
  operators dropped (sum of ``stateOperators[].numRowsDroppedByWatermark``).

Counters (``observe_batch_counts``, increments reported by the job's own ``foreachBatch`` code):

- ``kappalake_dead_letter_rows_total{pipeline,layer}``: rows sent to the dead-letter queue.
- ``kappalake_late_rows_total{pipeline,layer}``: rows that arrived behind the watermark.
- ``kappalake_valid_rows_total{pipeline,layer}``: rows that passed validation.
- ``kappalake_quarantined_rows_total{pipeline,layer}``: rows quarantined by data-quality expectations
  (also counted in ``dead_letter_rows``).
- ``kappalake_quality_checks_total{pipeline,layer}``: expectation verdicts recorded (one per expectation
  per non-empty batch).
- ``kappalake_quality_failures_total{pipeline,layer}``: failed expectation verdicts.

Gauges (``observe_progress``; from the newest progress observed for the query):

- ``kappalake_input_rows_per_second{pipeline,layer,query}``: arrival rate (``inputRowsPerSecond``).
- ``kappalake_processed_rows_per_second{pipeline,layer,query}``: ``processedRowsPerSecond``.
- ``kappalake_batch_duration_seconds{pipeline,layer,query}``: wall time of the last executed batch
  (``batchDuration``, else ``durationMs.triggerExecution``).
- ``kappalake_batch_phase_seconds{pipeline,layer,query,phase}``: last executed batch's
  ``durationMs`` per phase (addBatch, getBatch, latestOffset, queryPlanning, triggerExecution,
  walCommit, commitOffsets).
- ``kappalake_last_batch_timestamp_seconds{pipeline,layer,query}``: Unix time of the newest
  trigger reported (``timestamp``). Spark also reports an idle trigger every
  ``spark.sql.streaming.noDataProgressEventInterval`` (10 s), so this stays fresh while the query
  is alive and idle and goes stale when a batch hangs or the query stops.
- ``kappalake_watermark_timestamp_seconds{pipeline,layer,query}``: event-time watermark
  (``eventTime.watermark``), only for queries with a watermark.
- ``kappalake_state_rows{pipeline,layer,query}``: rows in state stores (sum of ``numRowsTotal``).
- ``kappalake_state_memory_bytes{pipeline,layer,query}``: state store memory (``memoryUsedBytes``).
- ``kappalake_consumer_lag_offsets{pipeline,layer,topic,partition}``: offsets behind the partition's
  latest offset. Set by ``observe_lag`` (against the broker's high watermark, fresh on every poll)
  and by ``observe_progress`` from a Kafka source's ``latestOffset - endOffset`` (as of that batch).
- ``kappalake_consumer_lag_seconds{pipeline,layer,topic}``: age of the oldest unread record, when
  the caller can tell (``observe_lag_seconds``).
- ``kappalake_query_failed{pipeline,layer,query}``: 1 after ``mark_failed``; back to 0 when a batch
  of a later run (another ``runId``) is observed. The message is kept in ``failures``.
- ``kappalake_throughput_baseline_rows_per_second{pipeline,layer}``: expected input rate, set by
  ``set_baseline`` (e.g. from config); the throughput alert compares against it.

Histogram (``observe_latency``):

- ``kappalake_end_to_end_latency_seconds{pipeline,layer,kind}``: per-row delay from the event's
  time (``kind="event_time"``) or its Kafka timestamp (``kind="kafka_timestamp"``) to its write,
  buckets 0.1 s .. 1 h.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_KINDS = ("event_time", "kafka_timestamp")
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
BATCH_COUNTS = ("dead_letter_rows", "late_rows", "valid_rows", "quarantined_rows", "quality_checks",
                "quality_failures")

_Q = ("pipeline", "layer", "query")
_PL = ("pipeline", "layer")
_Key = tuple[str, str, str]


def _epoch(stamp: str | None) -> float | None:
    """Spark's ``2024-05-01T12:00:00.123Z`` -> Unix seconds (None when absent)."""
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def kafka_offsets(value: Any) -> dict[tuple[str, int], int]:
    """``{"topic": {"0": 12}}`` (dict or JSON string) -> ``{(topic, 0): 12}``; other sources -> ``{}``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, Mapping):
        return {}
    out: dict[tuple[str, int], int] = {}
    for topic, partitions in value.items():
        if not isinstance(partitions, Mapping):
            return {}  # not a Kafka offset (e.g. Delta's {"reservoirVersion": 3, ...})
        for partition, offset in partitions.items():
            if str(partition).lstrip("-").isdigit() and isinstance(offset, int):
                out[(str(topic), int(partition))] = offset
    return out


class PipelineMetrics:
    """Streaming-query metrics in a private Prometheus registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.failures: dict[_Key, str] = {}
        self._lock = threading.Lock()
        self._last_batch: dict[tuple[_Key, str], int] = {}  # (query key, runId) -> newest counted batchId
        self._last_stamp: dict[_Key, float] = {}
        self._runs: dict[_Key, str] = {}  # newest runId seen per query
        self._failed_run: dict[_Key, str | None] = {}
        self._server: Any = None

        def counter(name: str, doc: str, labels: Iterable[str] = _Q) -> Counter:
            return Counter(name, doc, tuple(labels), registry=self.registry)

        def gauge(name: str, doc: str, labels: Iterable[str] = _Q) -> Gauge:
            return Gauge(name, doc, tuple(labels), registry=self.registry)

        self.batches = counter("kappalake_batches_total", "Micro-batches executed.")
        self.input_rows = counter("kappalake_input_rows_total", "Rows read from the sources.")
        self.output_rows = counter("kappalake_output_rows_total", "Rows the sink reports written.")
        self.dropped = counter("kappalake_rows_dropped_by_watermark_total",
                               "Rows stateful operators dropped as behind the watermark.")
        self.counts = {name: counter(f"kappalake_{name}_total", f"{name.replace('_', ' ').capitalize()}.", _PL)
                       for name in BATCH_COUNTS}
        self.input_rate = gauge("kappalake_input_rows_per_second", "Arrival rate of the newest progress.")
        self.processed_rate = gauge("kappalake_processed_rows_per_second", "Processing rate of the newest progress.")
        self.duration = gauge("kappalake_batch_duration_seconds", "Wall time of the last executed batch.")
        self.phase = gauge("kappalake_batch_phase_seconds", "Last executed batch's time per phase.",
                           (*_Q, "phase"))
        self.last_batch = gauge("kappalake_last_batch_timestamp_seconds", "Unix time of the newest trigger.")
        self.watermark = gauge("kappalake_watermark_timestamp_seconds", "Event-time watermark, Unix time.")
        self.state_rows = gauge("kappalake_state_rows", "Rows held in state stores.")
        self.state_memory = gauge("kappalake_state_memory_bytes", "Memory used by state stores.")
        self.lag = gauge("kappalake_consumer_lag_offsets", "Offsets behind the partition's latest offset.",
                         (*_PL, "topic", "partition"))
        self.lag_seconds = gauge("kappalake_consumer_lag_seconds", "Age of the oldest unread record.",
                                 (*_PL, "topic"))
        self.failed = gauge("kappalake_query_failed", "1 when the query failed.")
        self.baseline = gauge("kappalake_throughput_baseline_rows_per_second", "Expected input rate.", _PL)
        self.latency = Histogram("kappalake_end_to_end_latency_seconds", "Per-row delay until written.",
                                 (*_PL, "kind"), buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe_progress(self, pipeline: str, layer: str, progress: Mapping[str, Any]) -> None:
        """Fold one ``StreamingQueryProgress`` dict; observing the same one again changes nothing."""
        query = str(progress.get("name") or progress.get("id") or "unnamed")
        key: _Key = (pipeline, layer, query)
        run = str(progress.get("runId"))
        batch = int(progress.get("batchId", -1))
        durations: Mapping[str, Any] = progress.get("durationMs") or {}
        rows = int(progress.get("numInputRows") or 0)
        executed = "addBatch" in durations or rows > 0
        stamp = _epoch(progress.get("timestamp"))
        with self._lock:
            new_batch = executed and batch > self._last_batch.get((key, run), -1)
            if new_batch:
                self._last_batch[(key, run)] = batch
            fresh = stamp is not None and stamp > self._last_stamp.get(key, float("-inf"))
            if fresh:
                self._last_stamp[key] = stamp  # type: ignore[assignment]
            if new_batch and run != self._runs.get(key):
                self._runs[key] = run
                if key in self._failed_run and self._failed_run[key] not in (None, run):
                    del self._failed_run[key]
                    self.failures.pop(key, None)
                    self.failed.labels(*key).set(0)
        operators: list[Mapping[str, Any]] = progress.get("stateOperators") or []
        if new_batch:
            self.batches.labels(*key).inc()
            self.input_rows.labels(*key).inc(rows)
            out = int((progress.get("sink") or {}).get("numOutputRows", -1))
            self.output_rows.labels(*key).inc(max(out, 0))
            self.dropped.labels(*key).inc(sum(int(op.get("numRowsDroppedByWatermark") or 0) for op in operators))
            total_ms = progress.get("batchDuration", durations.get("triggerExecution"))
            if total_ms is not None:
                self.duration.labels(*key).set(float(total_ms) / 1000)
            for phase, ms in durations.items():
                self.phase.labels(*key, phase).set(float(ms) / 1000)
            self.failed.labels(*key).inc(0)  # expose 0 from the first batch on
        if not fresh:
            return
        self.last_batch.labels(*key).set(stamp)  # type: ignore[arg-type]
        for gauge, field in ((self.input_rate, "inputRowsPerSecond"), (self.processed_rate, "processedRowsPerSecond")):
            if progress.get(field) is not None:
                gauge.labels(*key).set(float(progress[field]))
        watermark = _epoch((progress.get("eventTime") or {}).get("watermark"))
        if watermark is not None:
            self.watermark.labels(*key).set(watermark)
        if operators:
            self.state_rows.labels(*key).set(sum(int(op.get("numRowsTotal") or 0) for op in operators))
            self.state_memory.labels(*key).set(sum(int(op.get("memoryUsedBytes") or 0) for op in operators))
        for source in progress.get("sources") or []:
            end, latest = kafka_offsets(source.get("endOffset")), kafka_offsets(source.get("latestOffset"))
            for (topic, partition), offset in end.items():
                if (topic, partition) in latest:
                    self.observe_lag(pipeline, layer, topic, partition, latest[(topic, partition)] - offset)

    def observe_lag(self, pipeline: str, layer: str, topic: str, partition: int, lag: int) -> None:
        """Offsets of ``topic``/``partition`` not yet read (broker high watermark minus next offset)."""
        self.lag.labels(pipeline, layer, topic, str(partition)).set(max(int(lag), 0))

    def observe_lag_seconds(self, pipeline: str, layer: str, topic: str, seconds: float) -> None:
        """Age of the oldest record of ``topic`` not yet read."""
        self.lag_seconds.labels(pipeline, layer, topic).set(max(float(seconds), 0.0))

    def observe_batch_counts(self, pipeline: str, layer: str, **counts: int) -> None:
        """Add one batch's counts, e.g. ``dead_letter_rows=3, valid_rows=997`` (names: ``BATCH_COUNTS``)."""
        unknown = sorted(set(counts) - set(BATCH_COUNTS))
        if unknown:
            raise ValueError(f"unknown batch count(s) {unknown}; expected some of {list(BATCH_COUNTS)}")
        for name, value in counts.items():
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
            self.counts[name].labels(pipeline, layer).inc(value)

    def observe_latency(self, pipeline: str, layer: str, kind: str, seconds_list: Iterable[float]) -> None:
        """Record per-row end-to-end delays measured from ``kind`` (``event_time`` or ``kafka_timestamp``)."""
        if kind not in LATENCY_KINDS:
            raise ValueError(f"latency kind must be one of {LATENCY_KINDS}, got {kind!r}")
        child = self.latency.labels(pipeline, layer, kind)
        for seconds in seconds_list:
            child.observe(max(float(seconds), 0.0))

    def mark_failed(self, pipeline: str, layer: str, query: str, message: str, run_id: str | None = None) -> None:
        """Set ``kappalake_query_failed`` to 1 and keep ``message`` in ``failures``.

        A batch of a run other than ``run_id`` (default: the newest run observed) clears it again.
        """
        key: _Key = (pipeline, layer, query)
        with self._lock:
            self._failed_run[key] = run_id if run_id is not None else self._runs.get(key)
            self.failures[key] = message
        self.failed.labels(*key).set(1)

    def set_baseline(self, pipeline: str, layer: str, rows_per_second: float) -> None:
        """Expected input rate for the throughput alert."""
        self.baseline.labels(pipeline, layer).set(float(rows_per_second))

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` for this registry on a daemon thread; return the bound port (0 picks a free one)."""
        if self._server is not None:
            raise RuntimeError(f"already serving on port {self._server.server_port}")
        self._server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop the HTTP server started by ``serve``, if any."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Current ``(name, labels, value)`` of every series (``*_created`` timestamps left out)."""
        return [(s.name, dict(s.labels), s.value)
                for family in self.registry.collect() for s in family.samples
                if not s.name.endswith("_created")]
