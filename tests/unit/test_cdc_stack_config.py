"""The pure parts of the CDC stack: generated configuration, POMs, the jar manifest, clear errors."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from kappalake import versions
from kappalake.errors import DependencyError, StackError
from kappalake.runtime import connect_jars
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack import postgres
from kappalake.runtime.stack.kafka_connect import (
    CONNECTOR,
    TOPICS,
    ConnectWorker,
    connector_settings,
    properties,
    worker_settings,
)
from kappalake.runtime.stack.postgres import PostgresInfo, PostgresServer, schema_sql, server_settings

SCHEMA = """CREATE TABLE IF NOT EXISTS merchants (
  merchant_id text PRIMARY KEY, name text NOT NULL, category text NOT NULL, country text NOT NULL,
  risk_tier integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS orders (
  order_id bigint PRIMARY KEY, merchant_id text NOT NULL, customer_id text NOT NULL, status text NOT NULL,
  amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE merchants REPLICA IDENTITY FULL;
ALTER TABLE orders REPLICA IDENTITY FULL;
"""


def parse_properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_schema_is_the_agreed_one() -> None:
    assert schema_sql() == SCHEMA


def test_worker_properties() -> None:
    text = properties(worker_settings("127.0.0.1:9092", 8083, Path("/h/stack/kafka-connect/connect.offsets"),
                                      Path("/c/jars/connect-plugins")))
    settings = parse_properties(text)
    assert settings["bootstrap.servers"] == "127.0.0.1:9092"
    assert settings["listeners"] == "http://127.0.0.1:8083"
    assert settings["key.converter"] == settings["value.converter"] == "org.apache.kafka.connect.json.JsonConverter"
    assert settings["key.converter.schemas.enable"] == "false"
    assert settings["value.converter.schemas.enable"] == "true"
    assert settings["offset.storage.file.filename"] == "/h/stack/kafka-connect/connect.offsets"
    assert settings["offset.flush.interval.ms"] == "1000"
    assert settings["plugin.path"] == "/c/jars/connect-plugins"
    assert settings["topic.creation.enable"] == "true"


def test_connector_properties() -> None:
    settings = parse_properties(properties(connector_settings(54321)))
    assert settings["name"] == CONNECTOR == "kappalake-postgres"
    assert settings["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert settings["plugin.name"] == "pgoutput"
    assert (settings["database.hostname"], settings["database.port"]) == ("127.0.0.1", "54321")
    assert settings["database.user"] == settings["database.dbname"] == "kappalake"
    assert settings["topic.prefix"] == "pg" and TOPICS == ("pg.public.merchants", "pg.public.orders")
    assert settings["table.include.list"] == "public.merchants,public.orders"
    assert settings["slot.name"] == "kappalake"
    assert settings["publication.autocreate.mode"] == "filtered"
    assert settings["decimal.handling.mode"] == "string"
    assert settings["snapshot.mode"] == "initial"
    assert settings["tombstones.on.delete"] == "true"
    assert settings["topic.creation.default.replication.factor"] == "1"
    assert settings["topic.creation.default.partitions"] == "3"


def test_properties_escape_backslashes() -> None:
    assert properties({"plugin.path": r"C:\jars"}) == "plugin.path=C:\\\\jars\n"


def test_postgres_settings_and_dsn() -> None:
    text = server_settings(5433, Path("/h/stack/postgres/socket"))
    assert "wal_level = logical\n" in text and "max_replication_slots = 10\n" in text
    assert "max_wal_senders = 10\n" in text and "listen_addresses = '127.0.0.1'\n" in text
    assert "port = 5433\n" in text and "unix_socket_directories = '/h/stack/postgres/socket'\n" in text
    info = PostgresInfo(pid=1, port=5433, data_dir="d", socket_dir="s", log_file="l", started_at=0.0)
    assert info.dsn == "postgresql://kappalake@127.0.0.1:5433/kappalake"


def test_state_files_live_under_the_stack_dir(tmp_path: Path) -> None:
    layout = HomeLayout(home=tmp_path, cache=tmp_path / "cache")
    assert PostgresServer(layout).state_file == tmp_path / "stack" / "postgres.json"
    assert ConnectWorker(layout).state_file == tmp_path / "stack" / "kafka-connect.json"
    assert PostgresServer(layout).status().state == ConnectWorker(layout).status().state == "stopped"
    with pytest.raises(StackError, match="stack up --with cdc"):
        ConnectWorker(layout).url()


def test_long_homes_get_a_short_socket_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "_reachable", lambda path: True)
    deep = HomeLayout(home=tmp_path / ("x" * 120), cache=tmp_path)
    socket_dir = PostgresServer(deep).socket_dir
    assert str(socket_dir).startswith("/tmp/kappalake-pg-") and socket_dir == PostgresServer(deep).socket_dir
    assert PostgresServer(HomeLayout(home=Path("/k"), cache=Path("/c"))).socket_dir == Path("/k/stack/postgres/socket")


def test_cluster_moves_out_of_homes_the_postgres_user_cannot_reach(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    server = PostgresServer(HomeLayout(home=tmp_path / "home", cache=tmp_path))
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 0)
    monkeypatch.setattr(postgres, "_reachable", lambda path: True)
    assert server.cluster_dir == server.dir and server.data_dir == tmp_path / "home/stack/postgres/data"
    monkeypatch.setattr(postgres, "_reachable", lambda path: False)
    assert server.cluster_dir.parent == postgres.EXTERNAL_BASE
    assert server.log_file == server.cluster_dir / "postgres.log"
    server.dir.mkdir(parents=True)
    server.location_file.write_text(str(tmp_path / "fixed"))  # the first up's choice sticks
    assert server.cluster_dir == tmp_path / "fixed"


def test_missing_postgres_binaries_name_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(postgres, "BIN_DIRS", (tmp_path / "nowhere",))
    with pytest.raises(StackError, match=r"PostgreSQL 15 not found \(looked in .*nowhere\).*apt-get install -y "
                                         "postgresql-15"):
        postgres.find_binaries()


def test_poms() -> None:
    pom = connect_jars.maven_pom("kafka-connect", versions.KAFKA_CONNECT_ARTIFACTS)
    assert "<artifactId>connect-runtime</artifactId><version>4.1.1</version>" in pom
    assert "<artifactId>connect-json</artifactId>" in pom and "<artifactId>connect-file</artifactId>" in pom
    assert "dependencyManagement" not in pom
    pom = connect_jars.maven_pom("debezium-postgres", versions.DEBEZIUM_POSTGRES_ARTIFACTS, versions.DEBEZIUM_VERSION)
    assert "<artifactId>debezium-bom</artifactId><version>3.6.1.Final</version>" in pom
    assert "<scope>import</scope>" in pom
    assert "<artifactId>debezium-connector-postgres</artifactId><version>3.6.1.Final</version>" in pom


def test_plugin_dir_leaves_out_what_the_worker_provides() -> None:
    jars = ["/p/connect-api-4.1.1.jar", "/p/kafka-clients-4.1.1.jar", "/p/slf4j-api-2.0.17.jar",
            "/p/debezium-connect-plugins-3.6.1.Final.jar", "/p/debezium-connector-postgres-3.6.1.Final.jar",
            "/p/postgresql-42.7.11.jar"]
    assert connect_jars.plugin_jars(jars) == jars[3:]


def _fake_mvn(tmp_path: Path, script: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    mvn = bin_dir / "mvn"
    mvn.write_text("#!/bin/sh\n" + script)
    mvn.chmod(mvn.stat().st_mode | stat.S_IEXEC)


def test_resolution_writes_a_manifest_and_reuses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake Maven copies a connector, its driver and jars the worker provides into -DoutputDirectory.
    _fake_mvn(tmp_path, 'for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${a#-DoutputDirectory=}";; '
                        'esac; done\nmkdir -p "$out"\nfor j in debezium-connector-postgres-3.6.1.Final postgresql-42 '
                        'kafka-clients-4.1.1 connect-api-4.1.1 slf4j-api-2.0.17; do touch "$out/$j.jar"; done\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    layout = HomeLayout(home=tmp_path / "home", cache=tmp_path / "cache")
    jars = connect_jars.resolve_debezium_jars(layout)
    plugin_dir = connect_jars.debezium_plugin_dir(layout)
    assert sorted(Path(j).name for j in jars) == ["debezium-connector-postgres-3.6.1.Final.jar", "postgresql-42.jar"]
    assert sorted(p.name for p in plugin_dir.glob("*.jar")) == sorted(Path(j).name for j in jars)
    manifest = json.loads((plugin_dir / "manifest.json").read_text())
    assert manifest == {"artifacts": list(versions.DEBEZIUM_POSTGRES_ARTIFACTS), "jars": jars}
    assert "<artifactId>debezium-bom</artifactId>" in (layout.cache / "maven-debezium-postgres" / "pom.xml").read_text()

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no Maven, no network: the manifest answers
    assert connect_jars.resolve_debezium_jars(layout) == jars
    with pytest.raises(DependencyError, match="Maven"):  # other pins: resolution needed, and Maven missing
        connect_jars.resolve_debezium_jars(layout, ("io.debezium:debezium-connector-postgres:9.9.9.Final",))


def test_maven_failure_names_the_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mvn(tmp_path, 'echo "[ERROR] Failed to execute goal on project kappalake-kafka-connect: Could not find '
                        'artifact org.apache.kafka:connect-runtime:jar:9.9.9 in kappalake-central"\nexit 1\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    layout = HomeLayout(home=tmp_path / "home", cache=tmp_path / "cache")
    with pytest.raises(DependencyError, match=r"Kafka Connect jars: could not resolve "
                                              r"org\.apache\.kafka:connect-runtime:jar:9\.9\.9 from Maven Central"):
        connect_jars.resolve_connect_jars(layout, ("org.apache.kafka:connect-runtime:9.9.9",))
    assert not (connect_jars.connect_jars_dir(layout) / "manifest.json").exists()
