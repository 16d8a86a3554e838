"""Change data capture end to end on real PostgreSQL, Kafka Connect (Debezium), the broker, Spark and Delta.

Everything runs as a user runs it: ``kappalake stack up --with cdc``, ``kappalake produce cdc`` (the seeded
mix of inserts, updates, rapid updates of one key, multi-row transactions, deletes, delete then re-insert
and one ``ALTER TABLE ... ADD COLUMN``) and ``kappalake run orders`` in child processes on one data dir.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from kappalake.io.kafka.admin import end_offsets
from kappalake.ops.cdc_check import compare_with_postgres
from kappalake.runtime.paths import HomeLayout
from tests.integration.cli_runner import Cli, stack_cli

TOPIC = "pg.public.orders"


@pytest.fixture
def cdc_cli(tmp_path: Path, test_home: HomeLayout):
    """A data dir of its own with the local stack and its CDC services up."""
    with stack_cli(tmp_path, test_home.cache) as cli:
        cli("stack", "up", "--with", "cdc", timeout=900)
        try:
            yield cli
        finally:
            cli("stack", "down", check=False)


def layout_of(cli: Cli) -> HomeLayout:
    return HomeLayout(home=cli.home, cache=Path(cli.env["KAPPALAKE_CACHE"]))


def committed(checkpoint: Path) -> int:
    """Records a streaming query committed: the end offsets of its last committed batch, summed."""
    commits = [int(p.name) for p in (checkpoint / "commits").glob("*") if p.name.isdigit()]
    if not commits:
        return 0
    last = (checkpoint / "offsets" / str(max(commits))).read_text().strip().splitlines()[-1]
    return sum(int(o) for partitions in json.loads(last).values() for o in partitions.values())


def wait_caught_up(cli: Cli, bootstrap: str, job, pipeline: str, topic: str, timeout: float = 300) -> None:
    checkpoint = cli.home / "lake" / "_checkpoints" / pipeline / "silver" / "live"
    deadline = time.time() + timeout
    while time.time() < deadline:
        produced = sum(high for _, high in end_offsets(bootstrap, topic).values())
        if produced and committed(checkpoint) >= produced:
            return
        assert job.poll() is None, f"the job exited with {job.returncode}"
        time.sleep(1)
    raise AssertionError(f"silver of {pipeline} did not catch up with {topic} in {timeout:.0f}s")


def topic_changes(bootstrap: str, topic: str) -> dict[int, set[tuple[int, str]]]:
    """Per order id, the distinct (lsn, op) of its insert/update/snapshot changes on the topic."""
    from confluent_kafka import Consumer, TopicPartition

    ends = end_offsets(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.time()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
    total, seen = sum(h - lo for lo, h in ends.values()), 0
    found: dict[int, set[tuple[int, str]]] = defaultdict(set)
    while seen < total:
        for message in consumer.consume(10_000, timeout=2.0):
            if message.error() is not None:
                continue
            seen += 1
            if message.value() is None:
                continue
            payload = json.loads(message.value())
            payload = payload.get("payload", payload)
            if payload["op"] in ("r", "c", "u"):
                found[payload["after"]["order_id"]].add((payload["source"]["lsn"], payload["op"]))
    consumer.close()
    return found


def test_silver_and_history_equal_postgres_after_a_job_kill_and_a_connect_restart(cdc_cli: Cli) -> None:
    from deltalake import DeltaTable

    from kappalake.runtime.stack import ConnectWorker, LocalStack, PostgresServer

    cli = cdc_cli
    layout = layout_of(cli)
    bootstrap = LocalStack(layout).bootstrap_servers()
    dsn = PostgresServer(layout).status().server.dsn
    cli("produce", "cdc", "--rate", "0", "--changes", "1500", "--seed", "3")
    job = cli.start("run", "orders", "--layer", "silver", "--trigger", "1 second", log=cli.home / "job1.log")
    produced = threading.Thread(target=cli, args=("produce", "cdc", "--rate", "400", "--changes", "4000",
                                                   "--seed", "4"))
    try:
        wait_caught_up(cli, bootstrap, job, "orders", TOPIC, timeout=400)
        produced.start()
        time.sleep(3)
        ConnectWorker(layout).kill()  # no offset flush: Debezium redelivers what it sent since the last one
        ConnectWorker(layout).up()
        time.sleep(2)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        job = cli.start("run", "orders", "--layer", "silver", "--trigger", "1 second", log=cli.home / "job2.log")
        produced.join()
        time.sleep(3)  # the last changes reach the topic
        wait_caught_up(cli, bootstrap, job, "orders", TOPIC, timeout=400)
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=180) == 143
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)

    silver = str(cli.home / "lake" / "orders" / "silver")
    check = compare_with_postgres(dsn, "orders", "order_id", silver)
    assert check.mismatched == 0, check.examples
    assert check.source_rows > 1000
    columns = DeltaTable(silver).schema().to_arrow().names
    assert "channel" in columns  # added in Postgres mid-run, never declared

    history = DeltaTable(f"{silver}_history").to_pyarrow_table().to_pylist()
    current = [row for row in history if row["is_current"]]
    assert sorted(r["order_id"] for r in current) == sorted(DeltaTable(silver).to_pyarrow_table()
                                                           .column("order_id").to_pylist())
    versions: dict[int, list[dict]] = defaultdict(list)
    for row in history:
        versions[row["order_id"]].append(row)
    expected = topic_changes(bootstrap, TOPIC)
    assert {k: len(v) for k, v in versions.items()} == {k: len(v) for k, v in expected.items()}
    for rows in versions.values():
        rows.sort(key=lambda r: r["cdc_lsn"])
        for earlier, later in zip(rows, rows[1:], strict=False):
            if earlier["end_op"] == "u":  # an update closes a version when the next one starts
                assert earlier["valid_to"] == later["valid_from"]
            else:  # a delete closes it; a re-insert of the key starts a new one later
                assert earlier["end_op"] == "d" and earlier["valid_to"] <= later["valid_from"]
        assert sum(r["is_current"] for r in rows) <= 1
