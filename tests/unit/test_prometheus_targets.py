"""Job registration files for the local Prometheus (file_sd): content, naming, replace and removal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kappalake.ops.prometheus_targets import (
    register_metrics_target,
    registered_targets,
    target_file,
    unregister_metrics_target,
)
from kappalake.runtime.paths import HomeLayout


@pytest.fixture
def layout(tmp_path: Path) -> HomeLayout:
    return HomeLayout(home=tmp_path / "home", cache=tmp_path / "cache")


def test_one_file_sd_file_per_job(layout: HomeLayout) -> None:
    path = register_metrics_target(layout, "payments", "bronze+silver", "0.0.0.0", 9108)
    assert path == layout.stack / "prometheus" / "targets" / "payments.bronze+silver.live.json"
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:9108"], "labels": {"pipeline": "payments", "layer": "bronze+silver"}}]
    register_metrics_target(layout, "iot", "gold", "10.0.0.5", 9200, run="backfill 1")
    assert target_file(layout, "iot", "gold", "backfill 1").name == "iot.gold.backfill_1.json"
    assert sorted(registered_targets(layout)) == ["iot.gold.backfill_1.json", "payments.bronze+silver.live.json"]
    assert not list(path.parent.glob("*.tmp")) and not list(path.parent.glob(".*"))


def test_a_restarted_job_replaces_its_registration_and_the_old_one_cannot_remove_it(layout: HomeLayout) -> None:
    register_metrics_target(layout, "payments", "silver", "127.0.0.1", 40001)
    path = register_metrics_target(layout, "payments", "silver", "127.0.0.1", 40002)
    assert json.loads(path.read_text())[0]["targets"] == ["127.0.0.1:40002"]
    assert not unregister_metrics_target(layout, "payments", "silver", "127.0.0.1", 40001)
    assert path.exists()
    assert unregister_metrics_target(layout, "payments", "silver", "127.0.0.1", 40002)
    assert not path.exists()
    assert not unregister_metrics_target(layout, "payments", "silver", "127.0.0.1", 40002)


def test_ipv6_hosts_are_bracketed(layout: HomeLayout) -> None:
    path = register_metrics_target(layout, "p", "bronze", "::1", 9108)
    assert json.loads(path.read_text())[0]["targets"] == ["[::1]:9108"]
    assert json.loads(register_metrics_target(layout, "p", "bronze", "::", 9108).read_text())[0]["targets"] == [
        "127.0.0.1:9108"]
