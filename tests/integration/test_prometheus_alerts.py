"""End to end on real servers: a job whose Kafka consumption stalls makes the lag alerts fire in a real
Prometheus; a job that keeps reading the same topic does not page.

Each job is a real consumer group on the local broker. It reads a batch, commits, and folds a
Spark-shaped progress record of that batch into its own ``PipelineMetrics``, served over HTTP and
registered with ``register_metrics_target``. Its lag is measured from the broker (high watermark minus
the group's committed offset) and set with ``observe_lag``. The stalled job reads one batch and then
nothing, while a producer keeps writing.

The rules are the shipped ``alerts.yml`` with time compressed 30x (test copy, generated): every ``for:``
and every range window divided by 30 (5m -> 10s, 10m -> 20s), nothing else changed; scrape and
evaluation every second.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from kappalake.io.kafka.admin import TopicSpec, ensure_topics
from kappalake.ops.metrics import PipelineMetrics
from kappalake.ops.prometheus_targets import register_metrics_target, unregister_metrics_target
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import LocalStack, PrometheusServer
from kappalake.runtime.stack.prometheus import shipped_rules
from tests.integration.prometheus_api import RANGE, api, compress_rules, wait_for, write_compressed_rules

T = TypeVar("T")
FACTOR = 30
PARTITIONS = 3
LAG_ALERTS = {"KappalakeLagOverOneHour", "KappalakeLagGrowing"}
#: A fresh broker creates __consumer_offsets on the first group request: its coordinator settles first.
COORDINATOR_SETTLING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                        KafkaError.COORDINATOR_NOT_AVAILABLE}


def settled(call: Callable[[], T], timeout: float = 30.0) -> T:
    """``call()``, retried while the group coordinator settles or the error is retriable."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, KafkaError) and (error.retriable() or error.code() in COORDINATOR_SETTLING)
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class KafkaJob:
    """A consumer group that reads ``topic`` in batches and reports like a kappalake bronze query."""

    def __init__(self, bootstrap: str, topic: str, pipeline: str) -> None:
        self.topic, self.pipeline, self.layer = topic, pipeline, "bronze"
        self.group = f"{pipeline}-{uuid.uuid4().hex[:6]}"
        self.run_id, self.batch_id = str(uuid.uuid4()), 0
        config = {"bootstrap.servers": bootstrap, "group.id": self.group, "enable.auto.commit": False}
        self.consumer = Consumer(config)
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.offsets = Consumer(config)  # reads the broker's watermarks and the group's commits
        self.metrics = PipelineMetrics()
        self.port = self.metrics.serve(0)

    def _committed(self) -> dict[int, int]:
        committed = settled(lambda: self.offsets.committed(
            [TopicPartition(self.topic, p) for p in range(PARTITIONS)], timeout=10))
        return {tp.partition: max(tp.offset, 0) for tp in committed}

    def _latest(self) -> dict[int, int]:
        return {p: settled(lambda p=p: self.offsets.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10))[1]
                for p in range(PARTITIONS)}

    def read_batch(self, at_least: int = 0, timeout: float = 30.0) -> int:
        """Read what is there (at least ``at_least`` records), commit, observe the batch's progress."""
        started, start = time.monotonic(), self._committed()
        rows, deadline = 0, started + timeout
        while True:
            messages = self.consumer.consume(1000, timeout=0.2)
            rows += sum(1 for m in messages if m.error() is None)
            if (not messages and rows >= at_least) or time.monotonic() > deadline:
                break
        if rows:
            settled(lambda: self.consumer.commit(asynchronous=False))
        end, latest = self._committed(), self._latest()
        millis = int((time.monotonic() - started) * 1000)
        self.metrics.observe_progress(self.pipeline, self.layer, {
            "id": self.group, "runId": self.run_id, "name": f"{self.pipeline}.{self.layer}",
            "batchId": self.batch_id, "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "numInputRows": rows, "batchDuration": millis,
            "durationMs": {"addBatch": millis, "triggerExecution": millis} if rows else {"triggerExecution": millis},
            "sources": [{"startOffset": {self.topic: {str(p): o for p, o in start.items()}},
                         "endOffset": {self.topic: {str(p): o for p, o in end.items()}},
                         "latestOffset": {self.topic: {str(p): o for p, o in latest.items()}},
                         "numInputRows": rows}],
            "sink": {"numOutputRows": rows}})
        self.batch_id += 1
        return rows

    def observe_lag(self) -> int:
        """Broker high watermark minus the group's committed offset, per partition; returns the sum."""
        committed, latest = self._committed(), self._latest()
        for partition in range(PARTITIONS):
            self.metrics.observe_lag(self.pipeline, self.layer, self.topic, partition,
                                     latest[partition] - committed[partition])
        return sum(latest.values()) - sum(committed.values())

    def close(self) -> None:
        self.metrics.close()
        self.consumer.close()
        self.offsets.close()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    layout = HomeLayout(home=tmp_path / "home", cache=tmp_path / "cache")
    rules = write_compressed_rules(shipped_rules(), tmp_path / "alerts-30x.yml", FACTOR)
    server = PrometheusServer(layout, scrape_interval=1, evaluation_interval=1, rules_file=rules)
    server.up()
    yield server
    server.down()


def test_compressed_rules_change_only_durations(tmp_path: Path) -> None:
    shipped = yaml.safe_load(shipped_rules().read_text())
    compressed = compress_rules(shipped, FACTOR)
    pairs = [(a, b) for ga, gb in zip(shipped["groups"], compressed["groups"], strict=True)
             for a, b in zip(ga["rules"], gb["rules"], strict=True)]
    assert pairs and {"KappalakeLagOverOneHour", "KappalakeLagGrowing"} <= {a["alert"] for a, _ in pairs}
    for original, short in pairs:
        assert {k: v for k, v in original.items() if k not in ("for", "expr")} == \
               {k: v for k, v in short.items() if k not in ("for", "expr")}
        assert RANGE.sub("[w]", original["expr"]) == RANGE.sub("[w]", short["expr"])
        assert ("for" in original) == ("for" in short)
    lag = next(b for a, b in pairs if a["alert"] == "KappalakeLagGrowing")
    assert lag["for"] == "20s" and "[10s]" in lag["expr"]
    promtool = shutil.which("promtool")
    if promtool:
        path = write_compressed_rules(shipped_rules(), tmp_path / "alerts-30x.yml", FACTOR)
        checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_stalled_job_fires_the_lag_alerts(kafka_stack: LocalStack, topic_name: str,
                                          prometheus: PrometheusServer) -> None:
    bootstrap = kafka_stack.bootstrap_servers()
    ensure_topics(bootstrap, [TopicSpec(topic_name, PARTITIONS)])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    sent = [0]

    def produce(count: int) -> None:
        for _ in range(count):
            producer.produce(topic_name, value=b'{"n": %d}' % sent[0], partition=sent[0] % PARTITIONS)
            sent[0] += 1
        producer.flush(10)

    produce(300)
    stalled, healthy = KafkaJob(bootstrap, topic_name, "stalled"), KafkaJob(bootstrap, topic_name, "healthy")
    layout = prometheus.layout
    try:
        assert stalled.read_batch(at_least=300) == 300  # its one and only batch
        for job in (stalled, healthy):
            register_metrics_target(layout, job.pipeline, job.layer, "127.0.0.1", job.port)
        stop = threading.Event()
        errors: list[BaseException] = []

        def keep_going() -> None:
            """Producer at ~30 records/s; the healthy job reads each second; both lags measured."""
            try:
                while not stop.is_set():
                    produce(30)
                    healthy.read_batch()
                    stalled.observe_lag()
                    healthy.observe_lag()
                    stop.wait(0.5)
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)

        worker = threading.Thread(target=keep_going, daemon=True)
        worker.start()
        url = prometheus.url()
        started = time.monotonic()

        def firing() -> list[dict] | None:
            assert not errors, errors
            alerts = [a for a in api(url, "/api/v1/alerts")["alerts"] if a["labels"]["alertname"] in LAG_ALERTS]
            mine = [a for a in alerts if a["state"] == "firing" and a["labels"].get("pipeline") == "stalled"]
            return mine if {a["labels"]["alertname"] for a in mine} == LAG_ALERTS else None

        alerts = wait_for(firing, 75, "both lag alerts to fire for the stalled job", every=1)
        elapsed = time.monotonic() - started
        stop.set()
        worker.join(timeout=30)
        assert not errors, errors

        for alert in alerts:
            labels = alert["labels"]
            assert (labels["pipeline"], labels["layer"], labels["topic"]) == ("stalled", "bronze", topic_name)
            assert labels["tier"] == ("P0" if labels["alertname"] == "KappalakeLagOverOneHour" else "P1")
        by_name = {a["labels"]["alertname"]: a for a in alerts}
        # no input since its batch: lag / rate(input) = lag / 0 = +Inf seconds behind
        assert by_name["KappalakeLagOverOneHour"]["value"] in ("+Inf", "Inf")
        assert float(by_name["KappalakeLagGrowing"]["value"]) > 0
        assert re.search(r"growing for 10 minutes", by_name["KappalakeLagGrowing"]["annotations"]["summary"])
        others = api(url, "/api/v1/alerts")["alerts"]
        assert not [a for a in others if a["labels"].get("pipeline") == "healthy"
                    and a["labels"]["alertname"] == "KappalakeLagOverOneHour"], others

        lag = api(url, "/api/v1/query", query='sum(kappalake_consumer_lag_offsets{pipeline="stalled"})')["result"]
        behind = float(lag[0]["value"][1])
        assert 0 < behind <= sent[0] - 300, (behind, sent[0])
        rows = api(url, "/api/v1/query", query='kappalake_input_rows_total{pipeline="stalled"}')["result"]
        assert [float(r["value"][1]) for r in rows] == [300.0]
        print(f"lag alerts firing after {elapsed:.1f} s; stalled lag {behind:.0f} of {sent[0]} produced")
    finally:
        for job in (stalled, healthy):
            unregister_metrics_target(layout, job.pipeline, job.layer, "127.0.0.1", job.port)
            job.close()
