"""Fixtures for tests against the real local Kafka broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from kappalake.config.loader import load_pipeline
from kappalake.config.models import PipelineConfig, SourceConfig, TargetConfig
from kappalake.runtime.context import RunContext
from kappalake.runtime.jars import resolve_broker_jars
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import LocalStack
from tests.conftest import CONF


@pytest.fixture(scope="session")
def kafka_stack(test_home: HomeLayout) -> Iterator[LocalStack]:
    """The embedded broker, started once for the session in the test data dir."""
    resolve_broker_jars(test_home)
    stack = LocalStack(test_home)
    stack.up()
    yield stack
    stack.down()


@pytest.fixture(scope="session")
def bootstrap(kafka_stack: LocalStack) -> str:
    return kafka_stack.bootstrap_servers()


def pipeline_on_topic(name: str, topic: str, partitions: int = 3, **source_options: str) -> PipelineConfig:
    """The shipped pipeline ``name`` re-pointed at ``topic``, its gold tables suffixed with the topic
    (tests never share topics or ClickHouse tables)."""
    base = load_pipeline(name, CONF, "local")
    source = SourceConfig(subscribe=[topic], partitions=partitions, options={**base.source.options, **source_options})
    suffix = topic.replace("-", "_")
    views = {name: view.model_copy(update={"clickhouse": view.clickhouse.model_copy(
        update={"table": f"{view.clickhouse.table}_{suffix}"})}) for name, view in base.gold.views.items()}
    gold = base.gold.model_copy(update={"views": views})
    return base.model_copy(update={"source": source, "gold": gold})


@pytest.fixture
def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_context(test_home: HomeLayout, local_target: TargetConfig, kafka_stack: LocalStack, tmp_path):
    """Build a RunContext for a pipeline on its own topic and its own storage root."""

    def build(name: str, topic: str, partitions: int = 3, **source_options: str) -> RunContext:
        target = local_target.model_copy(update={"storage": local_target.storage.model_copy(
            update={"root": str(tmp_path / "lake")})})
        return RunContext(pipeline_on_topic(name, topic, partitions, **source_options), target, test_home)

    return build
