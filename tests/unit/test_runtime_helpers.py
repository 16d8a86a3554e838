"""Runtime helpers that need no JVM: Java detection, jar-resolution error messages, the broker POM,
the Spark session settings per target, and the Kafka settings handed to confluent-kafka."""

from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kappalake import versions
from kappalake.config.models import (
    ClickHouseConfig,
    KafkaTargetConfig,
    SparkConfig,
    StorageConfig,
    TargetConfig,
)
from kappalake.errors import DependencyError
from kappalake.io.kafka.client import librdkafka_config
from kappalake.runtime.jars import broker_pom, explain_ivy_failure, explain_maven_failure
from kappalake.runtime.java import INSTALL_HINT, check_java, find_java, parse_java_major
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.spark import ROCKSDB_PROVIDER, default_shuffle_partitions, session_conf

APT_HINT = "sudo apt-get install -y openjdk-17-jre-headless"

# --------------------------------------------------------------------------- java -version outputs
# As printed (on stderr) by real JDK builds.

JAVA_8_TEMURIN = """openjdk version "1.8.0_392"
OpenJDK Runtime Environment (Temurin)(build 1.8.0_392-b08)
OpenJDK 64-Bit Server VM (Temurin)(build 25.392-b08, mixed mode)
"""
JAVA_8_ORACLE = """java version "1.8.0_202"
Java(TM) SE Runtime Environment (build 1.8.0_202-b08)
Java HotSpot(TM) 64-Bit Server VM (build 25.202-b08, mixed mode)
"""
JAVA_11_UBUNTU = """openjdk version "11.0.21" 2023-10-17
OpenJDK Runtime Environment (build 11.0.21+9-post-Ubuntu-0ubuntu122.04)
OpenJDK 64-Bit Server VM (build 11.0.21+9-post-Ubuntu-0ubuntu122.04, mixed mode, sharing)
"""
JAVA_17_DEBIAN = """openjdk version "17.0.15" 2025-04-15
OpenJDK Runtime Environment (build 17.0.15+6-Debian-1deb12u1)
OpenJDK 64-Bit Server VM (build 17.0.15+6-Debian-1deb12u1, mixed mode, sharing)
"""
JAVA_17_WITH_TOOL_OPTIONS = """Picked up JAVA_TOOL_OPTIONS: -Dfile.encoding=UTF-8 -Xss4m
openjdk version "17.0.9" 2023-10-17 LTS
OpenJDK Runtime Environment Corretto-17.0.9.8.1 (build 17.0.9+8-LTS)
OpenJDK 64-Bit Server VM Corretto-17.0.9.8.1 (build 17.0.9+8-LTS, mixed mode, sharing)
"""
JAVA_21_TEMURIN = """openjdk version "21.0.5" 2024-10-15 LTS
OpenJDK Runtime Environment Temurin-21.0.5+11 (build 21.0.5+11-LTS)
OpenJDK 64-Bit Server VM Temurin-21.0.5+11 (build 21.0.5+11-LTS, mixed mode, sharing)
"""
JAVA_21_ORACLE = """java version "21.0.1" 2023-10-17 LTS
Java(TM) SE Runtime Environment (build 21.0.1+12-LTS-29)
Java HotSpot(TM) 64-Bit Server VM (build 21.0.1+12-LTS-29, mixed mode, sharing)
"""
JAVA_22_EA = """openjdk version "22-ea" 2024-03-19
OpenJDK Runtime Environment (build 22-ea+27-2262)
OpenJDK 64-Bit Server VM (build 22-ea+27-2262, mixed mode, sharing)
"""


@pytest.mark.parametrize(("output", "major"), [
    (JAVA_8_TEMURIN, 8),
    (JAVA_8_ORACLE, 8),
    (JAVA_11_UBUNTU, 11),
    (JAVA_17_DEBIAN, 17),
    (JAVA_17_WITH_TOOL_OPTIONS, 17),
    (JAVA_21_TEMURIN, 21),
    (JAVA_21_ORACLE, 21),
    (JAVA_22_EA, 22),
], ids=["8-temurin", "8-oracle", "11-ubuntu", "17-debian", "17-tool-options", "21-temurin", "21-oracle", "22-ea"])
def test_parse_java_major(output, major):
    assert parse_java_major(output) == major


@pytest.mark.parametrize("output", ["", "bash: java: command not found", "Error: could not find libjava.so"])
def test_parse_java_major_rejects_other_output(output):
    with pytest.raises(DependencyError, match="cannot read the Java version"):
        parse_java_major(output)


def fake_java(directory: Path, version_output: str, *, stream: str = "stderr") -> Path:
    """A ``java`` that prints ``version_output`` like ``java -version`` does (to stderr)."""
    directory.mkdir(parents=True, exist_ok=True)
    java = directory / "java"
    redirect = " >&2" if stream == "stderr" else ""
    quoted = "'" + version_output.replace("'", "'\\''") + "'"
    # printf is a shell builtin: the script works whatever PATH the test sets
    java.write_text(f"#!/bin/sh\nprintf '%s' {quoted}{redirect}\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return java


def test_check_java_rejects_java_11(tmp_path):
    java = fake_java(tmp_path / "jdk11" / "bin", JAVA_11_UBUNTU)
    with pytest.raises(DependencyError) as caught:
        check_java(java)
    message = str(caught.value)
    assert str(java) in message
    assert "is Java 11" in message
    assert "needs Java 17 or newer" in message
    assert APT_HINT in message and "JAVA_HOME" in message
    assert caught.value.exit_code == 3


@pytest.mark.parametrize(("output", "major", "stream"), [
    (JAVA_17_DEBIAN, 17, "stderr"),
    (JAVA_21_TEMURIN, 21, "stderr"),
    (JAVA_21_ORACLE, 21, "stdout"),  # some wrappers print to stdout; both are read
])
def test_check_java_accepts_17_and_newer(tmp_path, output, major, stream):
    java = fake_java(tmp_path / "bin", output, stream=stream)
    assert check_java(java) == (java, major)


def test_check_java_rejects_java_8(tmp_path):
    java = fake_java(tmp_path / "bin", JAVA_8_TEMURIN)
    with pytest.raises(DependencyError, match=r"is Java 8; kappalake needs Java 17 or newer"):
        check_java(java)


def test_check_java_on_a_file_that_cannot_run(tmp_path):
    java = tmp_path / "java"
    java.write_text("not a program")  # not executable
    with pytest.raises(DependencyError) as caught:
        check_java(java)
    assert f"cannot run {java}" in str(caught.value)
    assert INSTALL_HINT in str(caught.value)


def test_find_java_prefers_java_home(tmp_path, monkeypatch):
    java = fake_java(tmp_path / "jdk21" / "bin", JAVA_21_TEMURIN)
    on_path = fake_java(tmp_path / "path-bin", JAVA_11_UBUNTU)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk21"))
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_java() == java
    assert check_java() == (java, 21)


def test_find_java_with_a_broken_java_home(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(DependencyError) as caught:
        find_java()
    assert f"JAVA_HOME={tmp_path / 'no-jdk'} has no bin/java" in str(caught.value)
    assert APT_HINT in str(caught.value)


def test_find_java_on_path(tmp_path, monkeypatch):
    java = fake_java(tmp_path / "bin", JAVA_17_DEBIAN)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(java.parent))
    assert find_java() == java


def test_find_java_when_there_is_none(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory
    with pytest.raises(DependencyError) as caught:
        find_java()
    message = str(caught.value)
    assert "Java 17+ is required" in message and "no 'java' is on PATH" in message
    assert APT_HINT in message


# --------------------------------------------------------------------------- Maven / Ivy failures

MAVEN_NOT_FOUND = """[INFO] Scanning for projects...
[INFO]
[INFO] -------------------< dev.kappalake:kappalake-kafka-broker >--------------------
[INFO] Building kappalake-kafka-broker 1
[INFO] --------------------------------[ pom ]---------------------------------
[WARNING] The POM for org.apache.kafka:kafka_2.13:jar:9.9.9 is missing, no dependency information available
[INFO] ------------------------------------------------------------------------
[INFO] BUILD FAILURE
[INFO] ------------------------------------------------------------------------
[ERROR] Failed to execute goal on project kappalake-kafka-broker: Could not resolve dependencies for project \
dev.kappalake:kappalake-kafka-broker:pom:1: Could not find artifact org.apache.kafka:kafka_2.13:jar:9.9.9 in \
kappalake-central (https://repo1.maven.org/maven2) -> [Help 1]
[ERROR]
[ERROR] To see the full stack trace of the errors, re-run Maven with the -e switch.
[ERROR] Re-run Maven using the -X switch to enable full debug logging.
"""
MAVEN_NO_NETWORK = """[ERROR] Failed to execute goal on project kappalake-kafka-broker: Could not resolve dependencies for \
project dev.kappalake:kappalake-kafka-broker:pom:1: Failed to collect dependencies at \
org.apache.kafka:kafka_2.13:jar:4.1.1: Failed to read artifact descriptor for org.apache.kafka:kafka_2.13:jar:4.1.1: \
Could not transfer artifact org.apache.kafka:kafka_2.13:pom:4.1.1 from/to kappalake-central \
(https://repo1.maven.org/maven2): Connect to repo1.maven.org:443 [repo1.maven.org/151.101.12.209] failed: \
Connection refused -> [Help 1]
"""
MAVEN_DESCRIPTOR = """[ERROR] Failed to execute goal org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
(default-cli): Failed to read artifact descriptor for org.apache.logging.log4j:log4j-slf4j-impl:jar:2.24.3: \
The following artifacts could not be resolved: org.apache.logging.log4j:log4j-bom:pom:2.24.3 -> [Help 1]
"""
# Maven 3.8.7 run offline with an artifact missing from the local repository (captured).
MAVEN_OFFLINE = """\x1b[0m\x1b[0m[ERROR] Failed to execute goal on project kappalake-kafka-broker: Could not resolve \
dependencies for project dev.kappalake:kappalake-kafka-broker:pom:1: Cannot access kappalake-central \
(https://repo1.maven.org/maven2) in offline mode and the artifact org.apache.kafka:kafka_2.13:jar:9.9.9 has not been \
downloaded from it before. -> [Help 1]
[ERROR]
[ERROR] To see the full stack trace of the errors, re-run Maven with the -e switch.
"""
MAVEN_NO_PLUGIN = """[ERROR] No plugin found for prefix 'dependency' in the current project and in the plugin groups \
[org.apache.maven.plugins, org.codehaus.mojo] available from the repositories [local (/root/.m2/repository), \
kappalake-central (https://repo1.maven.org/maven2)] -> [Help 1]
[ERROR]
[ERROR] To see the full stack trace of the errors, re-run Maven with the -e switch.
"""


def test_explain_maven_missing_artifact():
    assert explain_maven_failure(MAVEN_NOT_FOUND) == \
        "could not resolve org.apache.kafka:kafka_2.13:jar:9.9.9 from Maven Central"


def test_explain_maven_transfer_failure_names_the_artifact():
    assert explain_maven_failure(MAVEN_NO_NETWORK) == \
        "could not resolve org.apache.kafka:kafka_2.13:pom:4.1.1 from Maven Central"


def test_explain_maven_descriptor_failure_drops_the_trailing_colon():
    assert explain_maven_failure(MAVEN_DESCRIPTOR) == \
        "could not resolve org.apache.logging.log4j:log4j-slf4j-impl:jar:2.24.3 from Maven Central"


def test_explain_maven_unresolved_dependencies_otherwise():
    message = explain_maven_failure(MAVEN_OFFLINE)
    assert message.startswith("could not resolve Cannot access kappalake-central")
    assert "org.apache.kafka:kafka_2.13:jar:9.9.9" in message


def test_explain_maven_other_errors_give_the_first_error_line():
    message = explain_maven_failure(MAVEN_NO_PLUGIN)
    assert message.startswith("No plugin found for prefix 'dependency'")
    assert "[ERROR]" not in message and "\n" not in message
    assert len(explain_maven_failure("[ERROR] " + "x" * 1000)) == 400


def test_explain_maven_without_error_lines_gives_the_tail():
    output = "line\n" * 200 + "Killed\n"
    message = explain_maven_failure(output)
    assert message.endswith("Killed") and len(message) == 400


IVY_NOT_FOUND = """:: loading settings :: url = jar:file:/venv/lib/python3.11/site-packages/pyspark/jars/ivy-2.5.3.jar!/org/\
apache/ivy/core/settings/ivysettings.xml
Ivy Default Cache set to: /home/u/.kappalake/cache/ivy/cache
The jars for the packages stored in: /home/u/.kappalake/cache/ivy/jars
org.apache.spark#spark-sql-kafka-0-10_2.13 added as a dependency
io.delta#delta-spark_2.13 added as a dependency
:: resolving dependencies :: org.apache.spark#spark-submit-parent-0b8a2c7e-5f0e-4b59-9d8c-1f4f3f0e9e11;1.0
\tconfs: [default]
:: resolution report :: resolve 2310ms :: artifacts dl 0ms
\t:: modules in use:
:: problems summary ::
:::: WARNINGS
\t\tmodule not found: io.delta#delta-spark_2.13;9.9.9
\t==== central: tried
\t  https://repo1.maven.org/maven2/io/delta/delta-spark_2.13/9.9.9/delta-spark_2.13-9.9.9.pom
\t\t::::::::::::::::::::::::::::::::::::::::::::::
\t\t::          UNRESOLVED DEPENDENCIES         ::
\t\t::::::::::::::::::::::::::::::::::::::::::::::
\t\t:: io.delta#delta-spark_2.13;9.9.9: not found
\t\t:: org.apache.spark#spark-sql-kafka-0-10_2.13;4.0.1: not found
\t\t::::::::::::::::::::::::::::::::::::::::::::::
:: USE VERBOSE OR DEBUG MESSAGE LEVEL FOR MORE DETAILS
Exception in thread "main" java.lang.RuntimeException: [unresolved dependency: io.delta#delta-spark_2.13;9.9.9: not \
found, unresolved dependency: org.apache.spark#spark-sql-kafka-0-10_2.13;4.0.1: not found]
\tat org.apache.spark.deploy.SparkSubmitUtils$.resolveMavenCoordinates(SparkSubmit.scala:1613)
\tat org.apache.spark.util.DependencyUtils$.resolveMavenDependencies(DependencyUtils.scala:185)
Traceback (most recent call last):
  File "<string>", line 6, in <module>
pyspark.errors.exceptions.base.PySparkRuntimeError: [JAVA_GATEWAY_EXITED] Java gateway process exited before sending \
its port number.
"""
IVY_NO_NETWORK = """:: resolving dependencies :: org.apache.spark#spark-submit-parent-5c1c;1.0
\tconfs: [default]
:: problems summary ::
:::: ERRORS
\tServer access error at url https://repo1.maven.org/maven2/io/delta/delta-spark_2.13/4.0.0/delta-spark_2.13-4.0.0.pom \
(java.net.ConnectException: Connection refused)
"""


def test_explain_ivy_names_every_unresolved_package_once():
    assert explain_ivy_failure(IVY_NOT_FOUND) == (
        "could not resolve io.delta:delta-spark_2.13:9.9.9, org.apache.spark:spark-sql-kafka-0-10_2.13:4.0.1 "
        "from Maven Central"
    )


def test_explain_ivy_configuration_not_found():
    output = ('Exception in thread "main" java.lang.RuntimeException: [unresolved dependency: '
              "org.example#connector_2.13;1.0.0: configuration not found in org.example#connector_2.13;1.0.0: "
              "'default'. It was required from org.apache.spark#spark-submit-parent;1.0 default]")
    assert explain_ivy_failure(output) == "could not resolve org.example:connector_2.13:1.0.0 from Maven Central"


def test_explain_ivy_other_failures_give_the_exception_line():
    assert explain_ivy_failure(IVY_NO_NETWORK) == (
        "Server access error at url https://repo1.maven.org/maven2/io/delta/delta-spark_2.13/4.0.0/"
        "delta-spark_2.13-4.0.0.pom (java.net.ConnectException: Connection refused)"
    )
    assert explain_ivy_failure("\n  nothing useful here  \n") == "nothing useful here"


# --------------------------------------------------------------------------- broker POM

POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def _dependencies(pom: str) -> list[str]:
    root = ET.fromstring(pom)
    return [":".join(dep.findtext(f"m:{part}", namespaces=POM_NS) for part in ("groupId", "artifactId", "version"))
            for dep in root.findall("m:dependencies/m:dependency", POM_NS)]


def test_broker_pom_lists_each_pinned_artifact():
    pom = broker_pom()
    assert len(versions.KAFKA_BROKER_ARTIFACTS) >= 2
    for coordinate in versions.KAFKA_BROKER_ARTIFACTS:
        group, artifact, version = coordinate.split(":")
        assert (f"<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
                f"<version>{version}</version></dependency>") in pom
    assert _dependencies(pom) == list(versions.KAFKA_BROKER_ARTIFACTS)
    assert f"org.apache.kafka:kafka_{versions.SCALA_BINARY}:{versions.KAFKA_BROKER_VERSION}" in _dependencies(pom)
    root = ET.fromstring(pom)
    assert root.findtext("m:packaging", namespaces=POM_NS) == "pom"
    assert root.findtext("m:artifactId", namespaces=POM_NS) == "kappalake-kafka-broker"


def test_broker_pom_for_other_artifacts():
    artifacts = ("org.example:one:1.0", "org.example:two_2.13:2.0-RC1")
    assert _dependencies(broker_pom(artifacts)) == list(artifacts)


# --------------------------------------------------------------------------- Spark session settings

COMMON = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.streaming.stateStore.providerClass": ROCKSDB_PROVIDER,
    "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # bounded driver status store for jobs that run ~86,400 micro-batches a day
    "spark.sql.ui.retainedExecutions": "100",
    "spark.ui.retainedJobs": "200",
    "spark.ui.retainedStages": "200",
    "spark.ui.retainedTasks": "10000",
    "spark.sql.streaming.ui.retainedQueries": "20",
}
LOCAL_ONLY = ("spark.ui.enabled", "spark.ui.showConsoleProgress", "spark.driver.extraJavaOptions",
              "spark.sql.warehouse.dir")


def make_target(name: str, spark: SparkConfig) -> TargetConfig:
    return TargetConfig(
        name=name,
        kafka=KafkaTargetConfig(bootstrap_servers="local-stack" if name == "local" else "broker-1:9092"),
        storage=StorageConfig(root="/tmp/lake" if name == "local" else "dbfs:/kappalake"),
        clickhouse=ClickHouseConfig(dsn="chdb:///tmp/ch" if name == "local" else "https://u:p@ch.example:8443/db"),
        spark=spark,
    )


@pytest.fixture
def layout(tmp_path) -> HomeLayout:
    return HomeLayout(home=tmp_path / "home", cache=tmp_path / "cache")


def test_rocksdb_provider_is_the_spark_class():
    assert ROCKSDB_PROVIDER == "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"


@pytest.mark.parametrize(("cores", "partitions"), [(1, 2), (2, 4), (3, 6), (16, 32)])
def test_default_shuffle_partitions(cores, partitions):
    assert default_shuffle_partitions(cores) == partitions


def test_session_conf_local(layout):
    conf = session_conf(make_target("local", SparkConfig(master="local[*]", jars="resolve")), layout, cores=3)
    for key, value in COMMON.items():
        assert conf[key] == value, key
    assert conf["spark.sql.shuffle.partitions"] == "6"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.ui.showConsoleProgress"] == "false"
    assert conf["spark.sql.warehouse.dir"] == str(layout.home / "spark-warehouse")
    assert conf["spark.driver.memory"] == "2g"
    assert conf["spark.databricks.delta.snapshotPartitions"] == "6"  # few partitions: cheap Delta commits
    java_options = conf["spark.driver.extraJavaOptions"]
    assert java_options.startswith("-Dlog4j2.configurationFile=file:")
    log4j = Path(java_options.removeprefix("-Dlog4j2.configurationFile=file:"))
    assert log4j.name == "log4j2.properties" and log4j.is_file()
    assert set(conf) == set(COMMON) | set(LOCAL_ONLY) | {"spark.sql.shuffle.partitions", "spark.driver.memory",
                                                             "spark.databricks.delta.snapshotPartitions"}


def test_session_conf_databricks(layout):
    conf = session_conf(make_target("databricks", SparkConfig(jars="provided")), layout, cores=8)
    for key, value in COMMON.items():
        assert conf[key] == value, key
    assert conf["spark.sql.shuffle.partitions"] == "16"
    for key in LOCAL_ONLY:
        assert key not in conf, key
    assert "spark.driver.memory" not in conf  # the cluster decides
    assert set(conf) == set(COMMON) | {"spark.sql.shuffle.partitions"}
    assert not any("log4j" in value for value in conf.values())


def test_session_conf_target_settings(layout):
    local = session_conf(make_target("local", SparkConfig(jars="resolve", driver_memory="6g", shuffle_partitions=3)),
                         layout, cores=8)
    assert local["spark.driver.memory"] == "6g"
    assert local["spark.sql.shuffle.partitions"] == "3"
    managed = session_conf(make_target("k8s", SparkConfig(jars="provided", driver_memory="8g")), layout, cores=2)
    assert managed["spark.driver.memory"] == "8g"
    assert "spark.ui.enabled" not in managed


@pytest.mark.parametrize("jars", ["resolve", "provided"])
def test_session_conf_user_conf_overrides(layout, jars):
    user = {
        "spark.sql.shuffle.partitions": "64",
        "spark.ui.enabled": "true",
        "spark.sql.streaming.stateStore.providerClass": "com.example.CustomProvider",
        "spark.driver.extraJavaOptions": "-Dfoo=bar",
        "spark.sql.adaptive.enabled": "false",
    }
    conf = session_conf(make_target("local" if jars == "resolve" else "databricks",
                                    SparkConfig(jars=jars, shuffle_partitions=5, conf=user)), layout, cores=4)
    for key, value in user.items():
        assert conf[key] == value, key
    assert conf["spark.sql.extensions"] == COMMON["spark.sql.extensions"]  # untouched keys stay


def test_session_conf_uses_the_machine_cores_by_default(layout, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    conf = session_conf(make_target("local", SparkConfig(jars="resolve")), layout)
    assert conf["spark.sql.shuffle.partitions"] == "10"
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: assume 2 cores
    conf = session_conf(make_target("local", SparkConfig(jars="resolve")), layout)
    assert conf["spark.sql.shuffle.partitions"] == "4"


# --------------------------------------------------------------------------- Kafka client settings

PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'username="ABCDEFGH12345678" password="s3cr3t/+=Key";')


def test_librdkafka_config_for_sasl_ssl():
    options = {
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "PLAIN",
        "kafka.sasl.jaas.config": PLAIN_JAAS,
        "kafka.isolation.level": "read_committed",
        "kafka.ssl.endpoint.identification.algorithm": "https",
        "startingOffsets": "earliest",
        "maxOffsetsPerTrigger": "500000",
    }
    assert librdkafka_config("pkc-1.eu-west-1.aws.confluent.cloud:9092", options) == {
        "bootstrap.servers": "pkc-1.eu-west-1.aws.confluent.cloud:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "ABCDEFGH12345678",
        "sasl.password": "s3cr3t/+=Key",
    }


def test_librdkafka_config_derives_the_mechanism_from_the_login_module():
    config = librdkafka_config("b:9092", {"kafka.security.protocol": "SASL_SSL", "kafka.sasl.jaas.config": PLAIN_JAAS})
    assert config["sasl.mechanism"] == "PLAIN"
    assert (config["sasl.username"], config["sasl.password"]) == ("ABCDEFGH12345678", "s3cr3t/+=Key")
    assert "sasl.jaas.config" not in config

    scram = ('org.apache.kafka.common.security.scram.ScramLoginModule required username="svc" password="pw";')
    assert librdkafka_config("b:9092", {"kafka.sasl.jaas.config": scram})["sasl.mechanism"] == "SCRAM-SHA-512"
    # an explicit mechanism wins, whichever order the options come in
    for options in ({"kafka.sasl.mechanism": "SCRAM-SHA-256", "kafka.sasl.jaas.config": scram},
                    {"kafka.sasl.jaas.config": scram, "kafka.sasl.mechanism": "SCRAM-SHA-256"}):
        assert librdkafka_config("b:9092", options)["sasl.mechanism"] == "SCRAM-SHA-256"


def test_librdkafka_config_drops_java_only_and_spark_options():
    options = {
        "kafka.isolation.level": "read_committed",
        "kafka.ssl.truststore.type": "PKCS12",
        "kafka.ssl.keystore.type": "JKS",
        "failOnDataLoss": "true",
        "kafka.ssl.ca.location": "/etc/ssl/ca.pem",
        # Spark consumer tuning: librdkafka has no such property (it would refuse to start) or reads it differently
        "kafka.receive.buffer.bytes": "-1",
        "kafka.max.poll.records": "100000",
        "kafka.max.partition.fetch.bytes": "33554432",
    }
    assert librdkafka_config("b:9092", options) == {"bootstrap.servers": "b:9092", "ssl.ca.location": "/etc/ssl/ca.pem"}


def test_librdkafka_config_without_options_and_with_extras():
    assert librdkafka_config("localhost:9092") == {"bootstrap.servers": "localhost:9092"}
    config = librdkafka_config("localhost:9092", {"kafka.security.protocol": "SSL"},
                               **{"security.protocol": "PLAINTEXT", "client.id": "kappalake-produce"})
    assert config == {"bootstrap.servers": "localhost:9092", "security.protocol": "PLAINTEXT",
                      "client.id": "kappalake-produce"}
