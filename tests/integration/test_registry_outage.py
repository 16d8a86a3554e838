"""A live Avro job through a Schema Registry outage, on the real broker, Spark, Delta and the local registry
endpoint: records of cached schema ids keep flowing; a record of an id the job has not seen pauses the
query with a status (never a dead letter); when the registry is back the query resumes with the new
schema; a restart during the outage runs on the cached schemas. Nothing is lost or doubled."""

from __future__ import annotations

import io
import json
import signal
import struct
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from kappalake.ops.runinfo import read_run_record
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import LocalStack, SchemaRegistryEndpoint
from tests.integration.cli_runner import REPO, Cli, stack_cli

PIPELINE = "payments_avro"
READER = json.loads((REPO / "conf" / "schemas" / "payment.avsc").read_text())
# A later writer version: one more field, which the pipeline's reader schema skips.
WRITER_V2 = {**READER, "fields": [*READER["fields"], {"name": "note", "type": "string", "default": ""}]}


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, test_home: HomeLayout) -> Iterator[Cli]:
    with stack_cli(tmp_path_factory.mktemp("outage"), test_home.cache) as runner:
        yield runner


def layout(cli: Cli) -> HomeLayout:
    return HomeLayout(home=cli.home, cache=Path(cli.env["KAPPALAKE_CACHE"]))


def rows(cli: Cli, name: str) -> list[dict]:
    """The table's rows; none while it does not exist (or its first commit is still being written)."""
    path = cli.home / "lake" / PIPELINE / name
    try:
        return DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    except TableNotFoundError:  # no table, or its first commit is not there yet
        return []


def send(cli: Cli, schema: dict, schema_id: int, ids: range, prefix: str) -> None:
    """Records in the Confluent wire format, written with ``schema`` (id ``schema_id``), as any producer's."""
    parsed = fastavro.parse_schema(schema)
    producer = Producer({"bootstrap.servers": LocalStack(layout(cli)).bootstrap_servers()})
    for i in ids:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, {
            "event_id": f"{prefix}-{i}", "card_id": f"card-{i % 50:06d}", "merchant_id": "m-00001",
            "amount": Decimal("1.25"), "currency": "EUR", "country": "DE", "event_time": datetime.now(timezone.utc),
            "channel": "web", "note": "v2"})
        producer.produce(PIPELINE, key=f"card-{i % 50:06d}".encode(),
                         value=b"\x00" + struct.pack(">I", schema_id) + out.getvalue())
    assert producer.flush(30) == 0


def wait_for(what: str, check: Callable[[], bool], job, log: Path, timeout: float = 240) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, f"the job ended (exit {job.returncode}):\n{log.read_text()[-3000:]}"
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout}s:\n{log.read_text()[-3000:]}")


def stop(job, log: Path) -> None:  # type: ignore[no-untyped-def]
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=240) == 143, log.read_text()[-3000:]


def test_registry_outage_pauses_on_unknown_ids_only_and_loses_nothing(cli: Cli, tmp_path: Path) -> None:
    cli("produce", PIPELINE, "--events", "3000", "--seed", "1")
    endpoint = SchemaRegistryEndpoint(layout(cli))
    client = SchemaRegistryClient({"url": endpoint.url()})
    v1 = client.get_latest_version(f"{PIPELINE}-value").schema_id
    log = tmp_path / "job.log"
    job = cli.start("run", PIPELINE, "--layer", "silver", "--trigger", "1 second", log=log)
    try:
        wait_for("silver holds the first 3,000 events", lambda: len(rows(cli, "silver")) == 3000, job, log)
        v2 = client.register_schema(f"{PIPELINE}-value", Schema(json.dumps(WRITER_V2), "AVRO"))  # after the job began
        endpoint.down()

        send(cli, READER, v1, range(500), "cached")  # a cached id: decoded with the registry down
        wait_for("records of the cached schema id in silver", lambda: len(rows(cli, "silver")) == 3500, job, log)

        send(cli, WRITER_V2, v2, range(200), "new")  # an id the job has never seen, the registry down
        waiting = lambda: (read_run_record(cli.home / "runs" / PIPELINE, "silver") or {}).get("waiting")  # noqa: E731
        wait_for("the silver run record says it waits for the registry", lambda: bool(waiting()), job, log)
        assert f"schema id {v2}" in waiting() and "retrying" in waiting()
        shown = cli("status", PIPELINE).stdout
        assert "waiting for schema registry" in shown, shown
        time.sleep(5)
        assert len(rows(cli, "silver")) == 3500 and rows(cli, "dead_letter") == []  # paused, not dead-lettered

        endpoint.up()
        wait_for("the paused records in silver once the registry is back",
                 lambda: len(rows(cli, "silver")) == 3700, job, log)
        assert not waiting()
        stop(job, log)

        endpoint.down()  # a restart while the registry is down runs on the cached schemas
        job = cli.start("run", PIPELINE, "--layer", "silver", "--trigger", "1 second", log=log)
        send(cli, WRITER_V2, v2, range(200, 500), "new")
        send(cli, READER, v1, range(500, 800), "cached")
        wait_for("records of both cached ids after a restart without registry",
                 lambda: len(rows(cli, "silver")) == 4300, job, log)
        stop(job, log)
    finally:
        if job.poll() is None:
            job.kill()
        endpoint.up()

    silver = rows(cli, "silver")
    assert len({r["event_id"] for r in silver}) == len(silver) == 4300
    assert rows(cli, "dead_letter") == []
