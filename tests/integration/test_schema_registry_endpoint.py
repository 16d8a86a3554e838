"""The local Schema Registry endpoint: a real server process, driven by confluent-kafka's real client and serdes."""

from __future__ import annotations

import base64
import json
import struct
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from kappalake.errors import StackError
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.schema_registry import SchemaRegistryEndpoint
from kappalake.runtime.stack.schema_registry_http import AUTH_ENV


def avro(*fields: dict) -> Schema:
    return Schema(json.dumps({"type": "record", "name": "Payment", "namespace": "shop", "fields": list(fields)}), "AVRO")


AMOUNT = {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}}
AT = {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}
V1 = avro({"name": "id", "type": "string"}, AMOUNT, AT)
V2 = avro({"name": "id", "type": "string"}, AMOUNT, AT, {"name": "channel", "type": "string", "default": "web"})


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchemaRegistryEndpoint]:
    home = tmp_path_factory.mktemp("sr-home")
    service = SchemaRegistryEndpoint(HomeLayout(home=home, cache=home / "cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(AUTH_ENV, raising=False)
        service.up(timeout=60)
    yield service
    service.down()


@pytest.fixture
def client(endpoint: SchemaRegistryEndpoint) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": endpoint.url()})


def subject() -> str:
    return f"t{uuid.uuid4().hex[:10]}-value"


def test_status_url_and_not_running_message(endpoint: SchemaRegistryEndpoint, tmp_path) -> None:
    status = endpoint.status()
    assert status.state == "running" and status.server is not None
    assert endpoint.url() == f"http://127.0.0.1:{status.server.port}" == status.url
    assert json.loads(endpoint.state_file.read_text())["pid"] == status.server.pid
    idle = SchemaRegistryEndpoint(HomeLayout(home=tmp_path, cache=tmp_path / "cache"))
    with pytest.raises(StackError, match="not running .*start it with 'kappalake stack up'"):
        idle.url()


def test_register_get_lookup_delete(client: SchemaRegistryClient) -> None:
    name, other = subject(), subject()
    schema_id = client.register_schema(name, V1)
    assert client.register_schema(name, V1) == schema_id  # idempotent
    assert SchemaRegistryClient({"url": client._rest_client.base_urls[0]}).register_schema(other, V1) == schema_id
    fresh = SchemaRegistryClient({"url": client._rest_client.base_urls[0]})  # no cache
    assert json.loads(fresh.get_schema(schema_id).schema_str) == json.loads(V1.schema_str)
    assert fresh.get_schema(schema_id, subject_name=name).schema_type == "AVRO"
    latest = fresh.get_latest_version(name)
    assert (latest.subject, latest.version, latest.schema_id) == (name, 1, schema_id)
    assert fresh.get_version(name, 1).schema_id == schema_id
    found = fresh.lookup_schema(name, V1)
    assert (found.version, found.schema_id) == (1, schema_id)
    with pytest.raises(SchemaRegistryError) as missing:
        fresh.lookup_schema(name, V2)
    assert (missing.value.http_status_code, missing.value.error_code) == (404, 40403)
    with pytest.raises(SchemaRegistryError) as no_subject:
        fresh.get_latest_version(subject())
    assert no_subject.value.error_code == 40401
    with pytest.raises(SchemaRegistryError) as no_version:
        fresh.get_version(name, 7)
    assert no_version.value.error_code == 40402
    with pytest.raises(SchemaRegistryError) as no_schema:
        fresh.get_schema(987654)
    assert no_schema.value.error_code == 40403
    assert {(v.subject, v.version) for v in fresh.get_schema_versions(schema_id)} >= {(name, 1), (other, 1)}
    assert {name, other} <= set(fresh.get_subjects_by_schema_id(schema_id)) and name in fresh.get_subjects()
    assert fresh.get_schema_types() == ["AVRO", "JSON", "PROTOBUF"]
    with pytest.raises(SchemaRegistryError) as bad:
        fresh.register_schema(name, Schema('{"type": "record", "name": "X", "fields": [{"name": "a"}]}', "AVRO"))
    assert (bad.value.http_status_code, bad.value.error_code) == (422, 42201)

    assert fresh.delete_subject(other) == [1]
    assert other not in fresh.get_subjects() and other in fresh.get_subjects(deleted=True)
    with pytest.raises(SchemaRegistryError) as hard_first:
        fresh.delete_subject(name, permanent=True)
    assert hard_first.value.error_code == 40405
    assert fresh.delete_subject(other, permanent=True) == [1]
    assert other not in fresh.get_subjects(deleted=True)
    assert fresh.get_subjects_by_schema_id(schema_id) == [name]  # the id lives on in the other subject


def test_versions_compatibility_and_config(client: SchemaRegistryClient) -> None:
    name = subject()
    client.register_schema(name, V1)
    breaking = avro({"name": "id", "type": "string"}, AMOUNT, AT, {"name": "channel", "type": "string"})
    assert client.test_compatibility(name, V2) is True
    assert client.test_compatibility(name, breaking) is False
    verbose = client._rest_client.post(f"compatibility/subjects/{name}/versions/latest?verbose=true",
                                       body=breaking.to_dict())
    assert verbose["is_compatible"] is False
    assert "field 'channel' is missing in the writer schema and has no default" in verbose["messages"][0]
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(name, breaking)
    assert (refused.value.http_status_code, refused.value.error_code) == (409, 409)
    assert "field 'channel'" in refused.value.error_message
    v2 = client.register_schema(name, V2)
    assert client.get_versions(name) == [1, 2] and client.get_latest_version(name).schema_id == v2

    assert client.get_compatibility() == "BACKWARD"
    with pytest.raises(SchemaRegistryError) as unset:
        client.get_compatibility(name)
    assert unset.value.error_code == 40408
    assert client.set_compatibility(name, "none") == {"compatibility": "NONE"}
    assert client.get_compatibility(name) == "NONE"
    assert client.get_config(name).compatibility_level.value == "NONE"
    assert client.register_schema(name, breaking) > v2  # NONE: anything goes
    with pytest.raises(SchemaRegistryError) as invalid:
        client.set_compatibility(name, "SIDEWAYS")
    assert invalid.value.error_code == 42203
    assert client.delete_config(name).compatibility_level.value == "NONE"
    assert client.get_global_mode() == "READWRITE"
    with pytest.raises(SchemaRegistryError) as unknown:
        client._rest_client.get("no/such/path")
    assert (unknown.value.http_status_code, unknown.value.error_code) == (404, 404)


def test_avro_serde_round_trip_across_versions(client: SchemaRegistryClient) -> None:
    topic = f"pay{uuid.uuid4().hex[:8]}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    at = datetime(2026, 11, 1, 12, 30, 15, 123000, tzinfo=timezone.utc)
    old = AvroSerializer(client, V1.schema_str)
    written = old({"id": "p1", "amount": Decimal("1234.56"), "at": at}, ctx)
    magic, schema_id = struct.unpack(">bI", written[:5])
    assert magic == 0 and schema_id == client.get_latest_version(f"{topic}-value").schema_id
    same = AvroDeserializer(client)(written, ctx)
    assert same == {"id": "p1", "amount": Decimal("1234.56"), "at": at}

    new = AvroSerializer(client, V2.schema_str)
    written2 = new({"id": "p2", "amount": Decimal("-0.05"), "at": at, "channel": "pos"}, ctx)
    assert struct.unpack(">bI", written2[:5])[1] != schema_id
    assert client.get_versions(f"{topic}-value") == [1, 2]
    reader = AvroDeserializer(client, V2.schema_str)
    assert reader(written, ctx) == {"id": "p1", "amount": Decimal("1234.56"), "at": at, "channel": "web"}
    assert reader(written2, ctx)["channel"] == "pos"
    fresh = SchemaRegistryClient({"url": client._rest_client.base_urls[0]})  # no cached "latest" of v1
    latest = AvroSerializer(fresh, V1.schema_str,
                            conf={"auto.register.schemas": False, "use.latest.version": True})
    assert struct.unpack(">bI", latest({"id": "p3", "amount": Decimal("1.00"), "at": at, "channel": "x"}, ctx)[:5])[1] \
        == struct.unpack(">bI", written2[:5])[1]


def payment_class() -> type:
    fdp = descriptor_pb2.FileDescriptorProto(name=f"pay_{uuid.uuid4().hex[:8]}.proto", package="kappalake.test",
                                             syntax="proto3")
    message = fdp.message_type.add(name="Payment")
    for number, (field, kind) in enumerate([("id", "TYPE_STRING"), ("amount", "TYPE_DOUBLE"),
                                            ("cents", "TYPE_INT64")], start=1):
        message.field.add(name=field, number=number, type=descriptor_pb2.FieldDescriptorProto.Type.Value(kind),
                          label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("kappalake.test.Payment"))


def test_protobuf_serde_round_trip(client: SchemaRegistryClient) -> None:
    payment = payment_class()
    topic = f"proto{uuid.uuid4().hex[:8]}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    written = ProtobufSerializer(payment, client)(
        payment(id="p1", amount=12.5, cents=1250), ctx)
    magic, schema_id = struct.unpack(">bI", written[:5])
    assert magic == 0 and written[5] == 0  # message index [0] as the single byte 0
    registered = client.get_latest_version(f"{topic}-value")
    assert registered.schema_id == schema_id and registered.schema.schema_type == "PROTOBUF"
    # what the serializer registers: the file's serialized FileDescriptorProto, base64
    assert base64.b64decode(registered.schema.schema_str) == payment.DESCRIPTOR.file.serialized_pb
    fresh = SchemaRegistryClient({"url": client._rest_client.base_urls[0]})  # GET /schemas/ids/N?format=serialized
    read = ProtobufDeserializer(payment, schema_registry_client=fresh)(written, ctx)
    assert (read.id, read.amount, read.cents) == ("p1", 12.5, 1250)

    # a field number reused with another type is refused (the serializer sends a base64 FileDescriptorProto)
    fdp = descriptor_pb2.FileDescriptorProto.FromString(payment.DESCRIPTOR.file.serialized_pb)
    fdp.message_type[0].field[2].type = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    changed = Schema(base64.b64encode(fdp.SerializeToString()).decode(), "PROTOBUF")
    assert client.test_compatibility(f"{topic}-value", changed) is False
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(f"{topic}-value", changed)
    assert refused.value.error_code == 409 and "field 3" in refused.value.error_message


def test_persistence_across_restart(endpoint: SchemaRegistryEndpoint) -> None:
    name = subject()
    before = SchemaRegistryClient({"url": endpoint.url()})
    first, second = before.register_schema(name, V1), before.register_schema(name, V2)
    port = endpoint.status().server.port
    assert endpoint.down() == "running" and endpoint.status().state == "stopped"
    endpoint.up(timeout=60)
    assert endpoint.status().server.port == port
    after = SchemaRegistryClient({"url": endpoint.url()})
    assert [after.get_version(name, v).schema_id for v in (1, 2)] == [first, second]
    assert after.register_schema(subject(), V2) == second  # ids are kept, so the same schema gets the same id
    assert after.register_schema(subject(), avro({"name": "x", "type": "int"})) > second


def test_basic_auth(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = SchemaRegistryEndpoint(HomeLayout(home=tmp_path, cache=tmp_path / "cache"))
    monkeypatch.setenv(AUTH_ENV, "alice:s3cret")
    service.up(timeout=60)
    try:
        monkeypatch.delenv(AUTH_ENV)
        with pytest.raises(SchemaRegistryError) as denied:
            SchemaRegistryClient({"url": service.url()}).get_subjects()
        assert (denied.value.http_status_code, denied.value.error_code) == (401, 401)
        with pytest.raises(SchemaRegistryError):
            SchemaRegistryClient({"url": service.url(), "basic.auth.user.info": "alice:wrong"}).get_subjects()
        allowed = SchemaRegistryClient({"url": service.url(), "basic.auth.user.info": "alice:s3cret"})
        assert allowed.register_schema("a-value", V1) == 1 and allowed.get_subjects() == ["a-value"]
        assert service.up(timeout=10).state == "running"  # readiness copes with a server that wants auth
        assert "s3cret" not in service.log_file.read_text()
    finally:
        service.down()
