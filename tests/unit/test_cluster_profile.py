"""The ``cluster`` profile's pure parts: secure broker settings, ACL grants, access messages, the shipped zip,
the s3a jar selection and the ``cluster`` target (no process is started here)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from kappalake import versions
from kappalake.config.interpolate import literal_secrets
from kappalake.config.loader import load_project, load_target
from kappalake.io.kafka.access import explain_refusal, principal_of, uses_sasl
from kappalake.io.kafka.client import librdkafka_config
from kappalake.runtime.cluster import cluster_conf, is_cluster, uses_s3a
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.s3 import EXCLUDES, _artifact, s3_packages
from kappalake.runtime.ship import package_zip
from kappalake.runtime.stack.secure_broker import SecureBroker, client_options, grant_for, jaas

CONF = Path(__file__).resolve().parents[2] / "conf"
JAAS = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="kappalake" password="{}";'
ENV = {"KAPPALAKE_HOME": "/tmp/kl-home", "KAPPALAKE_KAFKA_PASSWORD": "pipe-secret",
       "KAPPALAKE_KAFKA_ADMIN_PASSWORD": "admin-secret"}


def test_jaas_password_must_be_a_reference() -> None:
    assert literal_secrets({"kafka.sasl.jaas.config": JAAS.format("${KAPPALAKE_KAFKA_PASSWORD}")}) == []
    assert literal_secrets({"kafka.sasl.jaas.config": JAAS.format("hunter2")}) == [("kafka.sasl.jaas.config",)]
    assert literal_secrets({"kafka.sasl.jaas.config": JAAS.format("x${A}")}) == [("kafka.sasl.jaas.config",)]


def test_cluster_target_interpolates_the_password_from_the_environment() -> None:
    target = load_target(CONF, "cluster", env=ENV)
    assert target.kafka.options["kafka.sasl.jaas.config"] == JAAS.format("pipe-secret")
    assert target.kafka.options["kafka.security.protocol"] == "SASL_SSL"
    assert target.kafka.options["kafka.ssl.truststore.location"] == "/tmp/kl-home/stack/kafka-tls/ca.pem"
    assert target.storage.root == "s3a://kappalake/lake" and target.spark.master == "local-stack"
    assert is_cluster(target) and uses_s3a(target)
    assert "jaas" in target.spark.conf["spark.redaction.regex"]
    assert not is_cluster(load_target(CONF, "local", env=ENV))


def test_librdkafka_config_of_the_cluster_target() -> None:
    config = librdkafka_config("127.0.0.1:9093", client_options(Path("/ca.pem"), "kappalake", "pw"))
    assert config["ssl.ca.location"] == "/ca.pem" and config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "kappalake" and config["sasl.password"] == "pw"
    assert "ssl.truststore.location" not in config and "sasl.jaas.config" not in config


def test_principal_and_refusal_messages_name_the_principal_not_the_password() -> None:
    options = client_options(Path("/ca.pem"), "kappalake", "pw-123")
    assert principal_of(options) == "User:kappalake" and principal_of({}) == "ANONYMOUS"
    assert uses_sasl(options) and not uses_sasl({})
    topic = explain_refusal("org.apache.kafka.common.errors.TopicAuthorizationException: Not authorized to access "
                            "topics: [payments]", options)
    assert topic is not None and "User:kappalake" in topic and "payments" in topic and "pw-123" not in topic
    group = explain_refusal("GroupAuthorizationException: Not authorized to access group: spark-kafka-source-1",
                            options)
    assert group is not None and "spark-kafka-source-1" in group
    assert explain_refusal("some other failure", options) is None


def test_secure_broker_properties_hold_no_password(tmp_path: Path) -> None:
    broker = SecureBroker(HomeLayout(home=tmp_path, cache=tmp_path / "cache"), env=ENV)
    text = broker.server_properties(9093, 9094)
    settings = dict(line.split("=", 1) for line in text.splitlines())
    assert settings["listeners"] == "SASL_SSL://127.0.0.1:9093,CONTROLLER://127.0.0.1:9094"
    assert settings["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert settings["allow.everyone.if.no.acl.found"] == "false" and settings["super.users"] == "User:admin"
    assert "${env:KAPPALAKE_KAFKA_ADMIN_PASSWORD}" in text
    assert "admin-secret" not in text and "pipe-secret" not in text
    assert "PLAINTEXT://" not in settings["listeners"]
    assert jaas("u", "p").endswith('username="u" password="p";')


def test_grant_reads_sources_writes_dead_letters_only() -> None:
    project = load_project(CONF, "cluster", env=ENV)
    payments = project.pipelines["payments"]
    grant = grant_for([payments])
    assert "payments" in grant.read and grant.write == ()
    dlq = payments.model_copy(update={"dead_letter": payments.dead_letter.model_copy(update={"kafka_topic": "dlq"})})
    assert grant_for([dlq]).write == ("dlq",)


def test_local_targets_get_no_cluster_settings(tmp_path: Path) -> None:
    target = load_target(CONF, "local", env=ENV)
    assert cluster_conf(target, HomeLayout(home=tmp_path, cache=tmp_path)) == ({}, None)


def test_s3a_jars_exclude_the_sdk_bundle() -> None:
    line = versions.LINES["4.2"]
    assert s3_packages(line)[0] == "org.apache.hadoop:hadoop-aws:3.5.0"
    assert "software.amazon.awssdk:s3:2.35.4" in s3_packages(line)
    assert "software.amazon.awssdk:bundle" in EXCLUDES
    assert _artifact("/x/org.apache.hadoop_hadoop-aws-3.5.0.jar") == "hadoop-aws"
    assert _artifact("/x/netty-codec-http-4.2.13.Final.jar") == "netty-codec-http"


def test_package_zip_imports_without_the_source_tree(tmp_path: Path) -> None:
    layout = HomeLayout(home=tmp_path, cache=tmp_path / "cache")
    archive = package_zip(layout)
    assert package_zip(layout) == archive  # built once per content
    names = zipfile.ZipFile(archive).namelist()
    assert "kappalake/__init__.py" in names and not any("__pycache__" in n for n in names)
    assert any(n.startswith("kappalake/runtime/resources/") for n in names)
    # -S: no site-packages, so the editable install cannot answer; the zip must
    probe = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                            "import kappalake.versions as v; print(v.__file__)", str(archive)],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert str(archive) in probe.stdout
