"""Metrics of a live run with known volumes: Prometheus endpoint, kappalake_metrics rows, status."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from kappalake.generator import GeneratorOptions
from kappalake.io.delta.stream import Trigger
from kappalake.ops.runinfo import read_run_record
from kappalake.pipelines.produce import produce
from kappalake.pipelines.runner import run_pipeline

RATE = 300  # events/s the producer keeps


@pytest.fixture(autouse=True)
def pii_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAPPALAKE_PII_KEY", "test-pii-key")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in the text format."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not exposed")


@pytest.mark.compat
def test_live_run_metrics_match_known_volumes(spark, make_context, topic_name, clickhouse) -> None:
    ctx = make_context("payments", topic_name)
    produce(ctx, events=100, options=GeneratorOptions(seed=30))  # the topic exists before the job starts
    produced: list = []
    scraped: list[str] = []

    def caught_up(tracker) -> bool:
        """After the producer finished and the job read everything: scrape the endpoint, then stop."""
        totals = tracker.totals.get("payments.silver")
        if not produced or totals is None or totals.input_rows < produced[0].sent + 100:
            return False
        record = read_run_record(ctx.runs_dir, "silver") or {}
        port = record.get("metrics_port")
        assert isinstance(port, int) and port > 0, record
        scraped.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())
        return True

    results: list = []
    job = threading.Thread(target=lambda: results.append(run_pipeline(
        ctx, ["silver"], Trigger(interval="2 seconds"), spark=spark, timeout=240, until=caught_up)))
    job.start()
    deadline = time.monotonic() + 120
    while not (read_run_record(ctx.runs_dir, "silver") or {}).get("live"):  # the first batch is done
        assert time.monotonic() < deadline, "the job did not finish its first batch"
        time.sleep(1)
    window = [time.time()]
    produced.append(produce(ctx, rate=RATE, duration=20, options=GeneratorOptions(seed=31, malformed_fraction=0.05)))
    window.append(time.time())
    job.join(timeout=300)
    assert results and scraped, "the live run did not catch up"
    summary, text = produced[0], scraped[0]

    labels = {"pipeline": "payments", "layer": "silver"}
    total = summary.sent + 100
    assert sample(text, "kappalake_input_rows_total", **labels) == total
    assert sample(text, "kappalake_dead_letter_rows_total", **labels) == summary.by_kind["malformed"]
    lags = re.findall(r'^kappalake_consumer_lag_offsets\{[^}]*\} (\S+)$', text, re.M)
    assert lags and all(float(v) == 0 for v in lags), "lag did not drop to 0 after catch-up"

    run_id = results[0].progress["payments.silver"][-1]["runId"]
    rows = clickhouse.query_arrow(
        "SELECT batch_id, toUnixTimestamp64Milli(ts) / 1000 AS started, input_rows, input_rows_per_second, "
        "dead_letter_rows, consumer_lag, latency_p95_s "
        f"FROM kappalake_metrics FINAL WHERE query = 'payments.silver' AND run_id = '{run_id}' "
        "ORDER BY batch_id").to_pandas()
    assert rows.input_rows.sum() == total
    assert rows.dead_letter_rows.sum() == summary.by_kind["malformed"]
    assert rows.consumer_lag.iloc[-1] == 0
    assert rows.latency_p95_s.notna().all() and (rows.latency_p95_s < 300).all()
    # Batches that started while the producer ran (not the first after it started): their arrival rate.
    rates = rows[(rows.started > window[0] + 3) & (rows.started <= window[1])].input_rows_per_second
    if len(rates):
        assert abs(rates.median() - RATE) / RATE < 0.5, f"arrival rate {rates.median():.0f}/s vs {RATE}/s produced"
    else:  # a loaded machine: batches outlasted the producer; the batches that read it saw at most its rate
        assert 0 < rows.input_rows_per_second.iloc[1:].max() <= RATE * 1.5, rows

    record = read_run_record(ctx.runs_dir, "silver") or {}
    assert set(record["live"]["lag"]) == {f"{topic_name}/{p}" for p in range(3)}
    assert record["live"]["state_rows"] > 0 and record["live"]["state_bytes"] > 0  # silver's event-id dedupe
    status = subprocess.run([sys.executable, "-m", "kappalake.cli.app", "status", "payments"], capture_output=True,
                            text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "live (last batch of each layer)" in status.stdout and "p95 latency" in status.stdout
    assert "state rows" in status.stdout and "state size" in status.stdout
