"""The ``cluster`` target end to end: a Spark standalone cluster (master + two workers, kappalake shipped to the
executors as a zip), tables and checkpoints on s3a:// (moto), a SASL_SSL broker with SCRAM users and ACLs.

One test (a few minutes: the cluster, the S3 endpoint and the broker start once) checks what issue #23 asks:
refusals name the principal and the topic; the payments pipeline, all layers, on the cluster equals the same
records run on the local target while a worker is killed mid-run and replaced; no secret in logs or run
records.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from confluent_kafka import Consumer, Producer
from deltalake import DeltaTable

from kappalake.config.loader import load_project
from kappalake.io.clickhouse.client import connect
from kappalake.io.delta.stream import Trigger
from kappalake.io.kafka.admin import TopicSpec, ensure_topics
from kappalake.io.kafka.client import librdkafka_config
from kappalake.pipelines.runner import run_pipeline
from kappalake.runtime.context import RunContext
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import ClickHouseEndpoint, SchemaRegistryEndpoint
from kappalake.runtime.stack.cluster_profile import down_cluster
from kappalake.runtime.stack.secure_broker import ADMIN_USER, SecureBroker, client_options
from kappalake.runtime.stack.spark_cluster import SparkCluster
from tests.conftest import CONF

pytest.importorskip("moto")
REPO = Path(__file__).resolve().parents[2]
EVENTS = 2000


def _consume_all(servers: str, options: dict[str, str], topic: str) -> list[tuple[bytes | None, bytes]]:
    consumer = Consumer(librdkafka_config(servers, options, **{"group.id": f"spark-kafka-source-copy-{topic}",
                                                               "auto.offset.reset": "earliest",
                                                               "enable.auto.commit": False}))
    consumer.subscribe([topic])
    records: list[tuple[bytes | None, bytes]] = []
    idle = time.monotonic()
    while time.monotonic() - idle < 5:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        records.append((message.key(), message.value()))
        idle = time.monotonic()
    consumer.close()
    return records


def _master_json(cluster: SparkCluster) -> dict:
    info = cluster.status().server
    assert info is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{info.master.webui_port}/json/", timeout=5) as answer:
        return json.load(answer)


def test_cluster_target_end_to_end(tmp_path: Path, test_home: HomeLayout, spark, local_target, kafka_stack,
                                   clickhouse, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "cluster-home"
    secrets_ = {"KAPPALAKE_KAFKA_ADMIN_PASSWORD": "adm-" + secrets.token_hex(8),
                "KAPPALAKE_KAFKA_PASSWORD": "pipe-" + secrets.token_hex(8),
                "AWS_SECRET_ACCESS_KEY": "s3-" + secrets.token_hex(8)}
    env = {**os.environ, **secrets_, "AWS_ACCESS_KEY_ID": "kappalake-test", "KAPPALAKE_HOME": str(home),
           "KAPPALAKE_CACHE": str(test_home.cache), "KAPPALAKE_CONF": str(CONF), "KAPPALAKE_PII_KEY": "e2e-key",
           "COLUMNS": "200"}
    env.pop("PYSPARK_PYTHON", None)
    layout = HomeLayout(home=home, cache=test_home.cache)
    project = load_project(CONF, "cluster", env=env)
    payments = project.pipelines["payments"]

    def cli(*args: str, extra: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kappalake.cli.app", "--target", "cluster", *args],
                              capture_output=True, text=True, env={**env, **(extra or {})}, cwd=tmp_path,
                              timeout=timeout)

    broker = SecureBroker(layout, env)
    cluster = SparkCluster(layout)
    try:
        started = time.monotonic()
        up = cli("stack", "up", "--profile", "cluster")
        print(f"cluster profile up in {time.monotonic() - started:.0f}s")
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        assert "(SASL_SSL, SCRAM-SHA-512)" in up.stdout and "principal User:kappalake" in up.stdout
        assert "S3 endpoint (moto) started" in up.stdout and "Spark standalone cluster started" in up.stdout
        listed = cli("stack", "status", "--format", "json")
        rows = [json.loads(line) for line in listed.stdout.splitlines() if line.startswith("{")]  # JSON lines
        states = {row["service"]: row["state"] for row in rows}
        assert all(states[name] == "running" for name in ("kafka", "s3", "spark-master", "spark-worker-1",
                                                          "spark-worker-2")), states
        servers = broker.bootstrap_servers()
        admin = client_options(broker.ca_file, ADMIN_USER, secrets_["KAPPALAKE_KAFKA_ADMIN_PASSWORD"])
        acls = broker.acls()  # read its topics and Spark's groups; no WRITE (no dead-letter topic), CREATE, ALL
        assert {"User:kappalake READ group:spark-kafka-source-*", "User:kappalake READ topic:payments"} <= set(acls)
        assert all(" READ " in acl for acl in acls), acls

        # -- refused clients: no credentials, a wrong password, a principal without the ACL ---------------
        conf = tmp_path / "conf-anonymous"
        (conf / "pipelines").mkdir(parents=True)
        pipeline_yaml = yaml.safe_load((CONF / "pipelines" / "payments.yml").read_text())
        pipeline_yaml.pop("targets", None)  # this project defines only its cluster target
        (conf / "pipelines" / "payments.yml").write_text(yaml.safe_dump(pipeline_yaml))
        (conf / "kappalake.yml").write_text(
            f"targets:\n  cluster:\n    kafka: {{bootstrap_servers: '{servers}'}}\n    storage: {{root: '{tmp_path}/x'}}\n"
            f"    clickhouse: {{dsn: 'chdb://{tmp_path}/ch'}}\n    spark: {{master: 'local[1]', jars: resolve}}\n")
        anonymous = subprocess.run([sys.executable, "-m", "kappalake.cli.app", "--conf", str(conf), "--target",
                                    "cluster", "run", "payments", "--layer", "bronze", "--available-now"],
                                   capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert anonymous.returncode == 5, anonymous.stderr
        assert "refused principal ANONYMOUS" in anonymous.stderr and "'payments'" in anonymous.stderr
        wrong = cli("run", "payments", "--layer", "bronze", "--available-now",
                    extra={"KAPPALAKE_KAFKA_PASSWORD": "not-the-password"})
        assert wrong.returncode == 5 and "refused principal User:kappalake (authentication failed" in wrong.stderr
        from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism
        from confluent_kafka.admin import UserScramCredentialUpsertion

        intruder_password = "intr-" + secrets.token_hex(6)
        upsert = UserScramCredentialUpsertion("intruder", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                              intruder_password.encode())
        admin_client = AdminClient(librdkafka_config(servers, admin))  # held: its futures die with it
        for future in admin_client.alter_user_scram_credentials([upsert]).values():
            future.result(timeout=30)
        unauthorised = cli("run", "payments", "--layer", "bronze", "--available-now",
                           extra={"KAPPALAKE_KAFKA_USER": "intruder", "KAPPALAKE_KAFKA_PASSWORD": intruder_password})
        assert unauthorised.returncode == 5, unauthorised.stderr
        assert "refused principal User:intruder: it may not read topic 'payments'" in unauthorised.stderr
        # the pipeline principal may read, not write its source topic
        errors: list[str] = []
        producer = Producer(librdkafka_config(servers, client_options(broker.ca_file, "kappalake",
                                                                       secrets_["KAPPALAKE_KAFKA_PASSWORD"])))
        producer.produce("payments", b"{}", on_delivery=lambda err, _: errors.append(str(err)))
        producer.flush(15)
        assert errors and "TOPIC_AUTHORIZATION_FAILED" in errors[0]
        del producer

        # -- the pipeline on the cluster, a worker killed mid-run and replaced --------------------------------
        produced = cli("produce", "payments", "--events", str(EVENTS), "--seed", "7", "--malformed-fraction", "0.05",
                       "--duplicate-fraction", "0.05", extra={"KAPPALAKE_KAFKA_USER": ADMIN_USER,
                                                              "KAPPALAKE_KAFKA_PASSWORD": admin_password(secrets_)})
        assert produced.returncode == 0, produced.stderr
        started = time.monotonic()
        job = subprocess.Popen([sys.executable, "-m", "kappalake.cli.app", "--target", "cluster", "run", "payments",
                                "--layer", "bronze,silver,gold", "--available-now"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        killed = None
        while job.poll() is None and killed is None:
            apps = _master_json(cluster).get("activeapps", [])
            if apps and time.monotonic() - started > 45:  # executors busy with the first batches
                killed = cluster.kill_worker("worker-1")
            time.sleep(1)
        assert killed is not None, "the run ended before a worker could be killed"
        cluster.up(timeout=120)  # 'kappalake stack up --profile cluster' again: the lost worker is replaced
        out, err = job.communicate(timeout=600)
        print(f"cluster run {time.monotonic() - started:.0f}s")
        assert job.returncode == 0, f"{out}\n{err}"
        assert _master_json(cluster)["aliveworkers"] == 2

        # -- the same records on the local target ---------------------------------------------------------------
        records = _consume_all(servers, admin, "payments")
        assert len(records) >= EVENTS
        local_topic = f"cluster-ref-{secrets.token_hex(4)}"
        ensure_topics(kafka_stack.bootstrap_servers(), [TopicSpec(local_topic, payments.source.partitions)])
        local_producer = Producer({"bootstrap.servers": kafka_stack.bootstrap_servers()})
        for key, value in records:
            local_producer.produce(local_topic, value, key)
        local_producer.flush(30)
        from tests.integration.conftest import pipeline_on_topic

        monkeypatch.setenv("KAPPALAKE_PII_KEY", "e2e-key")
        target = local_target.model_copy(update={"storage": local_target.storage.model_copy(
            update={"root": str(tmp_path / "local-lake")})})
        local_ctx = RunContext(pipeline_on_topic("payments", local_topic, payments.source.partitions), target,
                               test_home)
        started = time.monotonic()
        run_pipeline(local_ctx, ["bronze", "silver", "gold"], Trigger(available_now=True), spark=spark)
        print(f"local reference run {time.monotonic() - started:.0f}s")

        store = json.loads((home / "stack" / "object-store.json").read_text())
        s3 = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{store['port']}", "AWS_ALLOW_HTTP": "true",
              "AWS_ACCESS_KEY_ID": "kappalake-test", "AWS_SECRET_ACCESS_KEY": secrets_["AWS_SECRET_ACCESS_KEY"],
              "AWS_REGION": "us-east-1", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
        columns = ["event_id", "card_id", "merchant_id", "amount", "currency", "country", "event_time"]
        on_cluster = DeltaTable(f"s3://{store['bucket']}/lake/payments/silver", storage_options=s3).to_pandas()
        local = DeltaTable(str(tmp_path / "local-lake" / "payments" / "silver")).to_pandas()
        assert len(on_cluster) == len(local) and on_cluster.event_id.is_unique
        pd.testing.assert_frame_equal(on_cluster[columns].sort_values("event_id").reset_index(drop=True),
                                      local[columns].sort_values("event_id").reset_index(drop=True))
        for name, view in payments.gold.views.items():
            keys = [*view.group_by, "window_start", "window_end"]
            cluster_rows = _gold(layout, view.clickhouse.table).sort_values(keys).reset_index(drop=True)
            local_table = local_ctx.pipeline.gold.views[name].clickhouse.table
            local_rows = clickhouse.query_arrow(f"SELECT * FROM `{local_table}` FINAL").to_pandas()
            local_rows = local_rows.sort_values(keys).reset_index(drop=True)
            assert len(cluster_rows) == len(local_rows) > 0, name
            pd.testing.assert_frame_equal(cluster_rows[keys + list(view.metrics)],
                                          local_rows[keys + list(view.metrics)], check_dtype=False)

        # -- no secret in logs, run records, state files or 'status' ------------------------------------------
        started = time.monotonic()
        status = cli("status", "payments")
        print(f"status {time.monotonic() - started:.0f}s")
        leaks = []
        for path in [*home.rglob("*")]:
            if path.is_file() and path.suffix not in (".parquet", ".crc") and "chdb" not in path.parts:
                text = path.read_bytes()
                leaks += [f"{path}: {name}" for name, value in secrets_.items() if value.encode() in text]
        for name, value in secrets_.items():
            for stream in (out, err, status.stdout, status.stderr, anonymous.stderr, wrong.stderr,
                           unauthorised.stderr, up.stdout, up.stderr, listed.stdout):
                if value in stream:
                    leaks.append(f"output: {name}")
        assert not leaks, leaks
    finally:
        down = cli("stack", "down")
        down_cluster(layout)  # nothing left if 'stack down' failed
        SchemaRegistryEndpoint(layout).down()
        ClickHouseEndpoint(layout).down()
        broker.down()
    assert down.returncode == 0 and "Spark standalone cluster stopped" in down.stdout, down.stdout + down.stderr


def admin_password(values: dict[str, str]) -> str:
    return values["KAPPALAKE_KAFKA_ADMIN_PASSWORD"]


def _gold(layout: HomeLayout, table: str) -> pd.DataFrame:
    """FINAL rows of ``table`` in the cluster home's ClickHouse endpoint."""
    return connect(ClickHouseEndpoint(layout).dsn()).query_arrow(f"SELECT * FROM `{table}` FINAL").to_pandas()
