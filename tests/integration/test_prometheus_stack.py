"""The local Prometheus service: a real ``prometheus`` process with the shipped rules, scraping the jobs
registered through file_sd; up/status/down, port reuse and stale detection."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kappalake.errors import StackError
from kappalake.ops.metrics import PipelineMetrics
from kappalake.ops.prometheus_targets import register_metrics_target, unregister_metrics_target
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import PrometheusServer
from kappalake.runtime.stack.prometheus import shipped_rules
from tests.integration.prometheus_api import api, wait_for

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"


@pytest.fixture
def layout(tmp_path: Path) -> HomeLayout:
    return HomeLayout(home=tmp_path / "home", cache=tmp_path / "cache")


@pytest.fixture
def server(layout: HomeLayout) -> Iterator[PrometheusServer]:
    prometheus = PrometheusServer(layout, scrape_interval=1, evaluation_interval=1)
    yield prometheus
    prometheus.down()


@pytest.fixture
def metrics() -> Iterator[PipelineMetrics]:
    served = PipelineMetrics()
    yield served
    served.close()


def _alert_names() -> set[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"]}


def _target(url: str, port: int) -> dict | None:
    return next((t for t in api(url, "/api/v1/targets")["activeTargets"]
                 if t["labels"]["instance"] == f"127.0.0.1:{port}"), None)


def test_serves_the_shipped_rules_and_scrapes_registered_jobs(server: PrometheusServer, layout: HomeLayout,
                                                               metrics: PipelineMetrics) -> None:
    status = server.up()
    assert status.state == "running" and status.server is not None
    state = json.loads((layout.stack / "prometheus.json").read_text())
    assert set(state) == {"pid", "port", "started_at", "config", "log_file"} and state["pid"] == status.server.pid
    url = server.url()
    with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as ready:
        assert ready.status == 200
    config = yaml.safe_load(Path(state["config"]).read_text())
    assert config["rule_files"] == [str(ALERTS)] and shipped_rules() == ALERTS
    assert config["scrape_configs"][0]["job_name"] == "kappalake"

    rules = [rule for group in api(url, "/api/v1/rules")["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules if rule["type"] == "alerting"} == _alert_names()
    assert all(rule["health"] != "err" for rule in rules), rules

    port = metrics.serve(0)
    metrics.observe_lag("orders", "bronze", "orders-topic", 0, 42)
    metrics.observe_lag("orders", "bronze", "orders-topic", 1, 8)
    metrics.set_baseline("orders", "bronze", 250)
    register_metrics_target(layout, "orders", "bronze", "0.0.0.0", port)
    target = wait_for(lambda: (t := _target(url, port)) and t["health"] == "up" and t, 30, "the target to be up")
    assert target["labels"]["pipeline"] == "orders" and target["labels"]["layer"] == "bronze"
    assert target["scrapePool"] == "kappalake"

    def lag() -> dict[str, float] | None:
        result = api(url, "/api/v1/query", query='kappalake_consumer_lag_offsets{pipeline="orders"}')["result"]
        return {r["metric"]["partition"]: float(r["value"][1]) for r in result} or None

    assert wait_for(lag, 15, "the lag series") == {"0": 42.0, "1": 8.0}
    summed = api(url, "/api/v1/query", query='sum by (pipeline, layer, topic) (kappalake_consumer_lag_offsets)')
    assert [(r["metric"], r["value"][1]) for r in summed["result"]] == [
        ({"pipeline": "orders", "layer": "bronze", "topic": "orders-topic"}, "50")]
    baseline = api(url, "/api/v1/query", query="kappalake_throughput_baseline_rows_per_second")["result"]
    assert [r["value"][1] for r in baseline] == ["250"]
    up = api(url, "/api/v1/query", query='up{job="kappalake"}')["result"]
    assert [(r["metric"]["pipeline"], r["value"][1]) for r in up] == [("orders", "1")]

    assert unregister_metrics_target(layout, "orders", "bronze", "0.0.0.0", port)
    wait_for(lambda: _target(url, port) is None, 30, "the target to be dropped")

    pid = status.server.pid
    assert server.down() == "running"
    assert server.status().state == "stopped" and not (layout.stack / "prometheus.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(StackError, match="not running"):
        server.url()


def test_restart_reuses_the_port_and_a_killed_server_is_stale(server: PrometheusServer) -> None:
    first = server.up().server
    assert first is not None
    assert server.up().server == first  # idempotent: the running server is kept
    server.down()
    second = server.up().server
    assert second is not None and second.port == first.port and second.pid != first.pid

    os.kill(second.pid, signal.SIGKILL)
    stale = wait_for(lambda: (s := server.status()).state == "stale" and s, 10, "the stale state")
    assert stale.server == second
    with pytest.raises(StackError, match="stale"):
        server.url()
    third = server.up().server
    assert third is not None and third.pid != second.pid and third.port == second.port
    assert server.status().state == "running"
    api(server.url(), "/api/v1/status/config")
    assert server.down() == "running"


def test_clear_errors_without_binary_or_rules(layout: HomeLayout, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    missing = PrometheusServer(layout, rules_file=tmp_path / "nowhere.yml")
    with pytest.raises(StackError, match="nowhere.yml not found"):
        missing.up()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="apt-get install -y --no-install-recommends prometheus"):
        PrometheusServer(layout).up()
    assert PrometheusServer(layout).status().state == "stopped"
