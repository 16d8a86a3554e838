"""The Prometheus alert rules parse, pass their promtool unit tests and use metrics PipelineMetrics exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kappalake.ops.metrics import PipelineMetrics

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
INSTALL = ("promtool not found on PATH. Install it with `apt-get install -y --no-install-recommends prometheus` "
           "(the Debian/Ubuntu package `prometheus` ships /usr/bin/promtool); scripts/setup.sh should do this.")
TIERS = {"P0": "page", "P1": "ticket", "P2": "info"}


def _rules() -> list[dict]:
    groups = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.mark.parametrize("args", [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]],
                         ids=["check", "test"])
def test_promtool(args: list[str]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(INSTALL)
    done = subprocess.run([promtool, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    assert "SUCCESS" in done.stdout + done.stderr


def test_alerts_are_tiered_and_name_the_pipeline() -> None:
    rules = _rules()
    assert {rule["labels"]["tier"] for rule in rules} == set(TIERS)
    for rule in rules:
        assert TIERS[rule["labels"]["tier"]] == rule["labels"]["severity"], rule["alert"]
        assert "$labels.pipeline" in rule["annotations"]["description"], rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_alerts_use_only_exported_metric_names() -> None:
    metrics = PipelineMetrics()
    metrics.observe_progress("p", "bronze", {
        "id": "i", "runId": "r", "name": "p.bronze", "timestamp": "2025-01-01T00:00:00.000Z", "batchId": 0,
        "numInputRows": 1, "inputRowsPerSecond": 1.0, "processedRowsPerSecond": 1.0, "batchDuration": 5,
        "durationMs": {"addBatch": 1, "triggerExecution": 5}, "eventTime": {"watermark": "2025-01-01T00:00:00.000Z"},
        "stateOperators": [{"numRowsTotal": 1, "memoryUsedBytes": 1, "numRowsDroppedByWatermark": 0}],
        "sources": [{"endOffset": '{"t":{"0":1}}', "latestOffset": '{"t":{"0":2}}'}], "sink": {"numOutputRows": 1}})
    metrics.observe_batch_counts("p", "silver", dead_letter_rows=1, late_rows=1, valid_rows=1, quarantined_rows=1,
                                 quality_checks=1, quality_failures=1)
    metrics.observe_latency("p", "silver", "event_time", [1.0])
    metrics.observe_lag_seconds("p", "bronze", "t", 1.0)
    metrics.mark_failed("p", "bronze", "p.bronze", "boom")
    metrics.set_baseline("p", "bronze", 10)
    exported = {name for name, _, _ in metrics.samples()}
    used = {name for rule in _rules() for name in re.findall(r"\bkappalake_\w+", rule["expr"])}
    assert used and used <= exported, used - exported


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load((RULES_DIR / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in _rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']}: no firing case"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']}: no non-firing case"
