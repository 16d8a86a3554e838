"""Pipeline configs of binary formats: schema files resolved against the conf directory, clear errors for
what is missing or does not match, registry credentials only from the environment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kappalake.config.formats import SchemaRegistryConfig, subject_for
from kappalake.config.loader import load_pipeline
from kappalake.errors import ConfigError
from kappalake.io.registry.client import client_conf

CONF = Path(__file__).resolve().parents[2] / "conf"
ENV = {"KAPPALAKE_HOME": "/tmp/kappalake-test-home"}


@pytest.fixture()
def conf(tmp_path: Path) -> Path:
    copy = tmp_path / "conf"
    shutil.copytree(CONF, copy)
    return copy


def edit(conf: Path, pipeline: str, old: str, new: str) -> None:
    path = conf / "pipelines" / f"{pipeline}.yml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_the_shipped_binary_pipelines_resolve_their_schema_files() -> None:
    avro = load_pipeline("payments_avro", CONF, "local", env=ENV).events
    assert avro.avro is not None and Path(avro.avro.schema_file) == CONF / "schemas" / "payment.avsc"
    assert avro.schema_["channel"].type == "string" and avro.schema_["amount"].type == "decimal(12,2)"
    proto = load_pipeline("payments_protobuf", CONF, "local", env=ENV).events
    assert proto.protobuf is not None and Path(proto.protobuf.descriptor) == CONF / "schemas" / "payment.desc"


def test_a_reader_schema_field_not_in_events_schema_is_added_with_its_avro_type(conf: Path) -> None:
    schema = json.loads((conf / "schemas" / "payment.avsc").read_text())
    schema["fields"].append({"name": "attempts", "type": "int", "default": 1})
    (conf / "schemas" / "payment.avsc").write_text(json.dumps(schema))

    events = load_pipeline("payments_avro", conf, "local", env=ENV).events

    assert events.schema_["attempts"].type == "int"
    assert list(events.schema_)[-1] == "attempts"


def test_a_missing_avsc_is_named(conf: Path) -> None:
    (conf / "schemas" / "payment.avsc").unlink()
    with pytest.raises(ConfigError, match=r"payments_avro.yml:\d+: .*payment.avsc: Avro schema file not found"):
        load_pipeline("payments_avro", conf, "local", env=ENV)


def test_a_declared_field_the_reader_schema_lacks_is_named(conf: Path) -> None:
    edit(conf, "payments_avro", "    country: {type: string, required: true}\n",
         "    country: {type: string, required: true}\n    region: {type: string}\n")
    with pytest.raises(ConfigError, match="field 'region' is not in the Avro reader schema"):
        load_pipeline("payments_avro", conf, "local", env=ENV)


def test_format_avro_needs_its_section_and_a_section_needs_its_format(conf: Path) -> None:
    edit(conf, "payments_avro", "  format: avro\n", "  format: json\n")
    with pytest.raises(ConfigError, match="avro: set, but format is 'json'"):
        load_pipeline("payments_avro", conf, "local", env=ENV)
    edit(conf, "payments_protobuf", "  protobuf:\n    descriptor: schemas/payment.desc\n"
                                    "    message: kappalake.payments.Payment\n    wire: confluent\n", "")
    with pytest.raises(ConfigError, match="format: protobuf needs an events.protobuf section"):
        load_pipeline("payments_protobuf", conf, "local", env=ENV)


def test_an_unknown_protobuf_message_lists_the_known_ones(conf: Path) -> None:
    edit(conf, "payments_protobuf", "message: kappalake.payments.Payment", "message: kappalake.payments.Refund")
    with pytest.raises(ConfigError, match="kappalake.payments.Payment"):
        load_pipeline("payments_protobuf", conf, "local", env=ENV)


def test_registry_credentials_come_from_the_named_variable_only() -> None:
    config = SchemaRegistryConfig(url="https://registry:8081", basic_auth_env="SR_AUTH", ca_location="/ca.pem")
    conf = client_conf(config, config.url, env={"SR_AUTH": "user:secret"})
    assert conf["basic.auth.user.info"] == "user:secret" and conf["ssl.ca.location"] == "/ca.pem"
    with pytest.raises(ConfigError, match="environment variable SR_AUTH is not set"):
        client_conf(config, config.url, env={})
    with pytest.raises(ValueError, match="credentials in the URL"):
        SchemaRegistryConfig(url="https://user:pw@registry:8081")


@pytest.mark.parametrize(("strategy", "subject"), [
    ("topic_name", "payments-value"), ("record_name", "kappalake.payments.Payment"),
    ("topic_record_name", "payments-kappalake.payments.Payment")])
def test_subject_naming_strategies(strategy: str, subject: str) -> None:
    assert subject_for(strategy, "payments", "kappalake.payments.Payment") == subject  # type: ignore[arg-type]
