"""Spark Kafka source options built from config: Spark's own names, target security, local splitting."""

from __future__ import annotations

import json
from pathlib import Path

from kappalake.config.loader import load_pipeline
from kappalake.config.models import KafkaTargetConfig, SourceConfig, SparkConfig, TargetConfig
from kappalake.io.kafka.reader import kafka_source_options
from kappalake.runtime.context import RunContext
from kappalake.runtime.paths import HomeLayout

CONF = Path(__file__).resolve().parents[2] / "conf"


def _ctx(source: SourceConfig, master: str | None = None, **kafka_options: str) -> RunContext:
    target = TargetConfig.model_validate({
        "name": "k8s", "kafka": KafkaTargetConfig(bootstrap_servers="broker:9092", options=kafka_options),
        "storage": {"root": "s3a://bucket/lake"}, "clickhouse": {"dsn": "https://ch:8443"},
        "spark": SparkConfig(master=master)})
    pipeline = load_pipeline("payments", CONF, "local").model_copy(update={"source": source})
    return RunContext(pipeline, target, HomeLayout(Path("/tmp/h"), Path("/tmp/c")))


def test_subscribe_and_defaults() -> None:
    options = kafka_source_options(_ctx(SourceConfig(subscribe=["a", "b"])))
    assert options["subscribe"] == "a,b" and options["kafka.bootstrap.servers"] == "broker:9092"
    assert options["failOnDataLoss"] == "true" and options["startingOffsets"] == "earliest"
    assert "minPartitions" not in options  # clusters keep Spark's one task per Kafka partition
    assert options["kafka.max.poll.records"] == "100000"  # one poll per fetch, not one per 500 records


def test_pipeline_can_lower_max_poll_records() -> None:
    source = SourceConfig(subscribe=["a"], options={"kafka.max.poll.records": 500})
    assert kafka_source_options(_ctx(source))["kafka.max.poll.records"] == "500"


def test_subscribe_pattern_uses_sparks_name() -> None:
    source = SourceConfig.model_validate({"subscribePattern": "pay.*", "options": {"maxOffsetsPerTrigger": 10}})
    options = kafka_source_options(_ctx(source))
    assert options["subscribePattern"] == "pay.*" and options["maxOffsetsPerTrigger"] == "10"
    assert "subscribe" not in options


def test_assign_is_json() -> None:
    options = kafka_source_options(_ctx(SourceConfig(assign={"payments": [0, 2]})))
    assert json.loads(options["assign"]) == {"payments": [0, 2]}


def test_target_security_options_and_pipeline_overrides() -> None:
    source = SourceConfig(subscribe=["a"], options={"failOnDataLoss": False, "kafka.isolation.level": "read_committed"})
    options = kafka_source_options(_ctx(source, **{"kafka.security.protocol": "SASL_SSL"}))
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert options["failOnDataLoss"] == "false" and options["kafka.isolation.level"] == "read_committed"


def test_local_runs_do_not_split_ranges_unless_configured() -> None:
    # Splitting (minPartitions) raced in Spark 4.0's consumer pool (ConcurrentModificationException)
    # on the failOnDataLoss=false path here, so it stays opt-in.
    assert "minPartitions" not in kafka_source_options(_ctx(SourceConfig(subscribe=["a"]), master="local[*]"))
    explicit = kafka_source_options(_ctx(SourceConfig(subscribe=["a"], options={"minPartitions": 4}),
                                         master="local[*]"))
    assert explicit["minPartitions"] == "4"
