"""The embedded Kafka broker: up/down/status, idempotent up, stale state, restart keeping data."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from kappalake.errors import StackError
from kappalake.io.kafka.admin import TopicSpec, end_offsets
from kappalake.io.kafka.producer import EventProducer
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import LocalStack


@pytest.fixture
def own_stack(tmp_path, test_home: HomeLayout):
    """A broker in its own data dir (these tests stop and restart it)."""
    layout = HomeLayout(home=tmp_path / "home", cache=test_home.cache)
    stack = LocalStack(layout)
    yield stack
    stack.down()


def test_up_status_down_and_idempotent_up(own_stack: LocalStack) -> None:
    assert own_stack.status().state == "stopped"
    with pytest.raises(StackError, match="kappalake stack up"):
        own_stack.bootstrap_servers()

    first = own_stack.up([TopicSpec("orders", 2)])
    assert first.state == "running" and first.broker is not None
    assert end_offsets(first.broker.bootstrap_servers, "orders") == {0: (0, 0), 1: (0, 0)}
    state = json.loads(own_stack.state_file.read_text())
    assert state["pid"] == first.broker.pid and state["port"] == first.broker.port

    again = own_stack.up([TopicSpec("orders", 2)])
    assert again.broker is not None and again.broker.pid == first.broker.pid  # no second broker

    assert own_stack.down() == "running"
    assert own_stack.status().state == "stopped"
    assert not own_stack.state_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(first.broker.pid, 0)
    assert own_stack.down() == "stopped"


def test_restart_keeps_data(own_stack: LocalStack) -> None:
    status = own_stack.up([TopicSpec("keep", 3)])
    producer = EventProducer(status.bootstrap_servers or "")
    for i in range(500):
        producer.send("keep", str(i % 7).encode(), f"v{i}".encode())
    assert producer.flush().delivered == 500
    del producer
    own_stack.down()

    restarted = own_stack.up()
    assert restarted.broker is not None and status.broker is not None
    assert restarted.broker.pid != status.broker.pid
    offsets = end_offsets(restarted.broker.bootstrap_servers, "keep")
    assert sum(high - low for low, high in offsets.values()) == 500


def test_stale_state_is_detected_and_replaced(own_stack: LocalStack) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    own_stack.dir.mkdir(parents=True, exist_ok=True)
    own_stack.state_file.write_text(json.dumps({"pid": dead.pid, "port": 1, "controller_port": 2, "started_at": 0,
                                                "version": "x", "log_file": "x"}))
    assert own_stack.status().state == "stale"
    with pytest.raises(StackError, match="not running \\(stale"):
        own_stack.bootstrap_servers()
    status = own_stack.up()
    assert status.state == "running" and status.broker is not None and status.broker.pid != dead.pid
    assert own_stack.status().state == "running"


def test_corrupt_state_file_gives_clear_error(own_stack: LocalStack) -> None:
    own_stack.dir.mkdir(parents=True, exist_ok=True)
    own_stack.state_file.write_text("{not json")
    with pytest.raises(StackError, match="unreadable state file"):
        own_stack.status()
    with pytest.raises(StackError, match="remove it"):
        own_stack.down()  # never guesses which process to stop
    own_stack.state_file.unlink()


def test_two_pipelines_on_one_topic_create_it_once_with_the_most_partitions(kafka_stack: LocalStack) -> None:
    """payments and payments_enriched read one topic: a CreateTopics request naming it twice crashed the
    process inside librdkafka (SIGSEGV) before ensure_topics kept one spec per name."""
    from kappalake.io.kafka.admin import ensure_topics

    name = f"shared-{os.getpid()}-{id(kafka_stack)}"
    created = ensure_topics(kafka_stack.bootstrap_servers(), [TopicSpec(name, 2), TopicSpec(name, 3)])
    assert created == [name]
    assert len(end_offsets(kafka_stack.bootstrap_servers(), name)) == 3
