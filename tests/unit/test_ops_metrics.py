"""PipelineMetrics folds Spark query progress into Prometheus metrics without double counting."""

from __future__ import annotations

import copy
import json
import urllib.request
from datetime import datetime, timezone
from typing import Any

import pytest

from kappalake.ops.metrics import PipelineMetrics, kafka_offsets

Q = {"pipeline": "payments", "layer": "bronze", "query": "payments.bronze"}
PL = {"pipeline": "payments", "layer": "bronze"}


def progress(batch: int, rows: int, end: dict[str, int], latest: dict[str, int], *, run: str = "run-1",
             timestamp: str = "2025-03-01T10:00:00.000Z", idle: bool = False) -> dict[str, Any]:
    """A progress as ``json.loads(query._jsq.lastProgress().json())`` gives it, Kafka offsets as JSON strings."""
    durations = ({"latestOffset": 3, "triggerExecution": 3} if idle else
                 {"addBatch": 850, "commitOffsets": 20, "getBatch": 0, "latestOffset": 12, "queryPlanning": 40,
                  "triggerExecution": 1000, "walCommit": 25})
    start = {"payments": {p: end[p] - rows // 2 for p in end}}
    return {
        "id": "0b6f6a4e-3c5a-4c47-9d43-2a7d1c9c0c11", "runId": run, "name": "payments.bronze",
        "timestamp": timestamp, "batchId": batch, "batchDuration": durations["triggerExecution"],
        "numInputRows": rows, "inputRowsPerSecond": rows / 10, "processedRowsPerSecond": rows / 1.0,
        "durationMs": durations,
        "eventTime": {"avg": "2025-03-01T09:59:50.000Z", "max": "2025-03-01T09:59:59.000Z",
                      "min": "2025-03-01T09:59:40.000Z", "watermark": "2025-03-01T09:59:00.000Z"},
        "stateOperators": [{"operatorName": "dedupe", "numRowsTotal": 5000 + batch, "numRowsUpdated": rows,
                            "memoryUsedBytes": 1_000_000, "numRowsDroppedByWatermark": 0 if idle else 3}],
        "sources": [{
            "description": "KafkaV2[Subscribe[payments]]",
            "startOffset": json.dumps(start), "endOffset": json.dumps({"payments": end}),
            "latestOffset": json.dumps({"payments": latest}), "numInputRows": rows,
            "inputRowsPerSecond": rows / 10, "processedRowsPerSecond": rows / 1.0,
            "metrics": {"avgOffsetsBehindLatest": "5.0", "maxOffsetsBehindLatest": "10",
                        "minOffsetsBehindLatest": "0"}}],
        "sink": {"description": "DeltaSink[/lake/payments/bronze]", "numOutputRows": -1 if idle else rows},
    }


BATCH0 = progress(0, 1000, {"0": 500, "1": 500}, {"0": 510, "1": 500}, timestamp="2025-03-01T10:00:00.000Z")
BATCH1 = progress(1, 400, {"0": 700, "1": 700}, {"0": 900, "1": 705}, timestamp="2025-03-01T10:00:10.000Z")


def value(metrics: PipelineMetrics, name: str, **labels: str) -> float | None:
    found = [v for n, l, v in metrics.samples() if n == name and l == labels]
    assert len(found) <= 1
    return found[0] if found else None


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()


def test_two_batches_observed_repeatedly_are_counted_once() -> None:
    metrics = PipelineMetrics()
    for p in (BATCH0, BATCH0, BATCH1, copy.deepcopy(BATCH1), BATCH0):
        metrics.observe_progress("payments", "bronze", p)
    assert value(metrics, "kappalake_batches_total", **Q) == 2
    assert value(metrics, "kappalake_input_rows_total", **Q) == 1400
    assert value(metrics, "kappalake_output_rows_total", **Q) == 1400
    assert value(metrics, "kappalake_rows_dropped_by_watermark_total", **Q) == 6
    # gauges follow the newest batch, even when an older one is observed after it
    assert value(metrics, "kappalake_input_rows_per_second", **Q) == 40.0
    assert value(metrics, "kappalake_processed_rows_per_second", **Q) == 400.0
    assert value(metrics, "kappalake_batch_duration_seconds", **Q) == 1.0
    assert value(metrics, "kappalake_batch_phase_seconds", **Q, phase="addBatch") == 0.85
    assert value(metrics, "kappalake_batch_phase_seconds", **Q, phase="walCommit") == 0.025
    assert value(metrics, "kappalake_last_batch_timestamp_seconds", **Q) == epoch("2025-03-01T10:00:10.000Z")
    assert value(metrics, "kappalake_watermark_timestamp_seconds", **Q) == epoch("2025-03-01T09:59:00.000Z")
    assert value(metrics, "kappalake_state_rows", **Q) == 5001
    assert value(metrics, "kappalake_state_memory_bytes", **Q) == 1_000_000
    assert value(metrics, "kappalake_query_failed", **Q) == 0
    # lag per partition from latestOffset - endOffset of the newest batch
    assert value(metrics, "kappalake_consumer_lag_offsets", **PL, topic="payments", partition="0") == 200
    assert value(metrics, "kappalake_consumer_lag_offsets", **PL, topic="payments", partition="1") == 5


def test_idle_heartbeat_refreshes_liveness_but_is_no_batch() -> None:
    metrics = PipelineMetrics()
    metrics.observe_progress("payments", "bronze", BATCH0)
    # Spark's no-data progress carries the id of the next batch to run
    idle = progress(1, 0, {"0": 500, "1": 500}, {"0": 500, "1": 500}, idle=True, timestamp="2025-03-01T10:00:05.000Z")
    metrics.observe_progress("payments", "bronze", idle)
    assert value(metrics, "kappalake_batches_total", **Q) == 1
    assert value(metrics, "kappalake_last_batch_timestamp_seconds", **Q) == epoch("2025-03-01T10:00:05.000Z")
    assert value(metrics, "kappalake_input_rows_per_second", **Q) == 0.0
    assert value(metrics, "kappalake_batch_duration_seconds", **Q) == 1.0  # still the last executed batch
    metrics.observe_progress("payments", "bronze", BATCH1)  # batch 1 really runs later: counted
    assert value(metrics, "kappalake_batches_total", **Q) == 2
    assert value(metrics, "kappalake_input_rows_total", **Q) == 1400


def test_a_restarted_run_counts_its_batches_again() -> None:
    metrics = PipelineMetrics()
    metrics.observe_progress("payments", "bronze", BATCH1)
    replay = dict(BATCH1, runId="run-2", timestamp="2025-03-01T10:05:00.000Z")  # same batch id, re-executed
    metrics.observe_progress("payments", "bronze", replay)
    metrics.observe_progress("payments", "bronze", replay)
    assert value(metrics, "kappalake_batches_total", **Q) == 2


def test_lag_gauge_is_set_and_clamped() -> None:
    metrics = PipelineMetrics()
    metrics.observe_progress("payments", "bronze", BATCH1)
    metrics.observe_lag("payments", "bronze", "payments", 0, 12345)
    metrics.observe_lag("payments", "bronze", "payments", 1, -3)
    metrics.observe_lag_seconds("payments", "bronze", "payments", 42.5)
    assert value(metrics, "kappalake_consumer_lag_offsets", **PL, topic="payments", partition="0") == 12345
    assert value(metrics, "kappalake_consumer_lag_offsets", **PL, topic="payments", partition="1") == 0
    assert value(metrics, "kappalake_consumer_lag_seconds", **PL, topic="payments") == 42.5


def test_kafka_offsets_parse_strings_and_dicts_and_ignore_other_sources() -> None:
    assert kafka_offsets('{"t":{"0":1,"1":2}}') == {("t", 0): 1, ("t", 1): 2}
    assert kafka_offsets({"t": {"3": 7}}) == {("t", 3): 7}
    assert kafka_offsets('{"sourceVersion":1,"reservoirVersion":5,"index":-1}') == {}
    assert kafka_offsets(None) == {} and kafka_offsets("not json") == {}


def test_batch_counts_accumulate() -> None:
    metrics = PipelineMetrics()
    metrics.observe_batch_counts("payments", "silver", valid_rows=990, dead_letter_rows=10)
    metrics.observe_batch_counts("payments", "silver", valid_rows=500, late_rows=2)
    silver = {"pipeline": "payments", "layer": "silver"}
    assert value(metrics, "kappalake_valid_rows_total", **silver) == 1490
    assert value(metrics, "kappalake_dead_letter_rows_total", **silver) == 10
    assert value(metrics, "kappalake_late_rows_total", **silver) == 2
    with pytest.raises(ValueError, match="unknown batch count"):
        metrics.observe_batch_counts("payments", "silver", bogus_rows=1)


def test_latency_histogram() -> None:
    metrics = PipelineMetrics()
    metrics.observe_latency("payments", "silver", "event_time", [0.05, 2.0, 45.0, 7200.0])
    metrics.observe_latency("payments", "silver", "kafka_timestamp", [0.3])
    labels = {"pipeline": "payments", "layer": "silver", "kind": "event_time"}
    assert value(metrics, "kappalake_end_to_end_latency_seconds_count", **labels) == 4
    assert value(metrics, "kappalake_end_to_end_latency_seconds_sum", **labels) == pytest.approx(7247.05)
    assert value(metrics, "kappalake_end_to_end_latency_seconds_bucket", **labels, le="0.1") == 1
    assert value(metrics, "kappalake_end_to_end_latency_seconds_bucket", **labels, le="60.0") == 3
    assert value(metrics, "kappalake_end_to_end_latency_seconds_bucket", **labels, le="3600.0") == 3
    assert value(metrics, "kappalake_end_to_end_latency_seconds_bucket", **labels, le="+Inf") == 4
    with pytest.raises(ValueError, match="latency kind"):
        metrics.observe_latency("payments", "silver", "wall_clock", [1.0])


def test_failure_is_flagged_until_a_new_run_makes_progress() -> None:
    metrics = PipelineMetrics()
    metrics.observe_progress("payments", "bronze", BATCH0)
    metrics.mark_failed("payments", "bronze", "payments.bronze", "Kafka offsets out of range")
    assert value(metrics, "kappalake_query_failed", **Q) == 1
    assert metrics.failures[("payments", "bronze", "payments.bronze")] == "Kafka offsets out of range"
    metrics.observe_progress("payments", "bronze", BATCH1)  # a late-read batch of the failed run
    assert value(metrics, "kappalake_query_failed", **Q) == 1
    metrics.observe_progress("payments", "bronze", dict(BATCH1, runId="run-2", timestamp="2025-03-01T11:00:00.000Z"))
    assert value(metrics, "kappalake_query_failed", **Q) == 0
    assert not metrics.failures


def test_instances_have_their_own_registry() -> None:
    first, second = PipelineMetrics(), PipelineMetrics()  # would raise on a shared registry
    first.observe_progress("payments", "bronze", BATCH0)
    second.set_baseline("payments", "bronze", 1500)
    assert value(second, "kappalake_batches_total", **Q) is None
    assert value(second, "kappalake_throughput_baseline_rows_per_second", **PL) == 1500
    assert not any(name.endswith("_created") for name, _, _ in first.samples())


def test_serve_exposes_the_text_format() -> None:
    metrics = PipelineMetrics()
    metrics.observe_progress("payments", "bronze", BATCH0)
    metrics.observe_progress("payments", "bronze", BATCH1)
    port = metrics.serve(0)
    try:
        assert port > 0
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            lines = response.read().decode().splitlines()
    finally:
        metrics.close()
    labels = 'layer="bronze",pipeline="payments",query="payments.bronze"'  # the text format sorts labels
    assert "# TYPE kappalake_batches_total counter" in lines
    assert f"kappalake_batches_total{{{labels}}} 2.0" in lines
    assert f"kappalake_input_rows_total{{{labels}}} 1400.0" in lines
    lag = 'layer="bronze",partition="0",pipeline="payments",topic="payments"'
    assert f"kappalake_consumer_lag_offsets{{{lag}}} 200.0" in lines
    assert not any(line.startswith(("python_gc", "process_")) for line in lines)  # not the global registry


def test_each_batch_row_carries_its_own_latency_though_a_no_data_batch_ran_before_it_was_read(tmp_path) -> None:
    """A stateful query runs a no-data batch (no events, no latency) right after a data batch; the
    runner reads the data batch's progress only after that. Its metrics row and histogram must still
    get the data batch's latency, once."""
    from pathlib import Path

    from kappalake.config.loader import load_pipeline, load_target
    from kappalake.ops import batch_metrics
    from kappalake.ops.monitor import RunMonitor
    from kappalake.runtime.context import RunContext
    from kappalake.runtime.paths import HomeLayout

    conf = Path(__file__).resolve().parents[2] / "conf"
    target = load_target(conf, "local")
    target = target.model_copy(update={"monitoring": target.monitoring.model_copy(update={"clickhouse_table": False})})
    monitor = RunMonitor(RunContext(load_pipeline("payments", conf, "local"), target,
                                    HomeLayout(tmp_path, tmp_path / "cache")))
    name = "payments.silver"
    batch_metrics.reset(name)
    batch_metrics.set_latency(name, 0, p50=1.0, p95=2.0, max=3.0, sample=[1.0, 2.0, 3.0])
    batch_metrics.set_latency(name, 1, p50=5.0, p95=6.0, max=7.0, sample=[5.0, 6.0])
    batch_metrics.set_latency(name, 2)  # the no-data batch: nothing to measure
    for batch, rows in ((0, 1000), (1, 400), (2, 0)):
        monitor.on_progress({**progress(batch, rows, {"0": 500 + batch, "1": 500}, {"0": 510, "1": 500}), "name": name})
    assert [(r["batch_id"], r["latency_p95_s"]) for r in monitor._pending_rows] == [(0, 2.0), (1, 6.0)]
    labels = {"pipeline": "payments", "layer": "silver", "kind": "event_time"}
    assert value(monitor.metrics, "kappalake_end_to_end_latency_seconds_count", **labels) == 5
    assert batch_metrics.latency(name, 1)["p95"] == 6.0
    batch_metrics.reset(name)  # a new run forgets them
    assert batch_metrics.latency(name, 1) == {}


def test_state_figures_add_memory_and_rocksdb_files_over_the_operators() -> None:
    from kappalake.ops.monitor import live_status, state_figures

    progress = {"stateOperators": [
        {"numRowsTotal": 1200, "memoryUsedBytes": 4096, "customMetrics": {"rocksdbTotalSstFilesSize": 10000}},
        {"numRowsTotal": 30, "memoryUsedBytes": 100, "customMetrics": {}},
    ]}

    assert state_figures(progress) == {"state_rows": 1230, "state_bytes": 4096 + 10000 + 100}
    assert state_figures({}) == {"state_rows": 0, "state_bytes": 0}  # a stateless query (bronze)
    status = live_status({**progress, "sources": []}, {}, {})
    assert (status["state_rows"], status["state_bytes"]) == (1230, 14196)
