"""Shared fixtures: an isolated data dir per test session, one shared jar cache, one Spark session.

The JVM jars are resolved once into ``$KAPPALAKE_CACHE`` (default ``<repo>/.kappalake/cache``, the
same cache the demo uses), so test runs after the first need no network.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kappalake.config.loader import load_target
from kappalake.config.models import TargetConfig
from kappalake.runtime.paths import HomeLayout

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


@pytest.fixture(scope="session")
def test_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeLayout]:
    """A fresh KAPPALAKE_HOME for the session, sharing the jar cache with the developer's data dir."""
    home = tmp_path_factory.mktemp("kappalake-home")
    cache = Path(os.environ.get("KAPPALAKE_CACHE") or REPO / ".kappalake" / "cache").resolve()
    saved = {k: os.environ.get(k) for k in ("KAPPALAKE_HOME", "KAPPALAKE_CACHE", "KAPPALAKE_CONF")}
    os.environ.update(KAPPALAKE_HOME=str(home), KAPPALAKE_CACHE=str(cache), KAPPALAKE_CONF=str(CONF))
    yield HomeLayout.from_env()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def local_target(test_home: HomeLayout) -> TargetConfig:
    return load_target(CONF, "local", env={**os.environ})


@pytest.fixture(scope="session")
def spark(local_target: TargetConfig, test_home: HomeLayout):
    """One local SparkSession (with the Kafka connector and Delta) for the whole test session."""
    from kappalake.runtime.spark import build_spark

    session = build_spark(local_target, app_name="kappalake-tests", layout=test_home)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def clickhouse(local_target: TargetConfig):
    """The session's ClickHouse: chDB under the test data dir (one chDB directory per process), or
    $CLICKHOUSE_DSN. Tests name their tables uniquely."""
    from kappalake.io.clickhouse.client import connect

    return connect(local_target.clickhouse.dsn)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration runs real processes (broker, Spark, Delta): mark it slow."""
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.slow)
