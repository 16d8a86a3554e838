"""Record values of a pipeline's format, for ``kappalake produce``: confluent-kafka's own Avro and Protobuf
serializers (they register the schema and write the Confluent wire format), or plain bytes.

``evolve_after`` N: the first N records are written with an older version of the Avro schema (the reader
schema without its fields that have defaults, which BACKWARD compatibility accepts), the rest with the
reader schema itself, so the topic holds two registered versions of its subject.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from kappalake.errors import ConfigError, KappalakeError
from kappalake.io.registry.client import client_conf
from kappalake.runtime.context import RunContext

Encode = Callable[[dict[str, Any]], bytes]
CHANNELS = ("web", "pos", "app")


def older_version(reader: dict[str, Any]) -> dict[str, Any]:
    """The reader schema without its fields that have a default (an earlier version of the subject)."""
    return {**reader, "fields": [f for f in reader["fields"] if "default" not in f]}


def avro_value(payload: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A generated payload shaped for ``schema``: decimals as Decimal, fields with defaults filled from
    the event id (stable across runs), unknown keys dropped."""
    record: dict[str, Any] = {}
    for field in schema["fields"]:
        name, kind = field["name"], field["type"]
        if name in payload:
            value = payload[name]
            if isinstance(kind, dict) and kind.get("logicalType") == "decimal" and not isinstance(value, Decimal):
                value = Decimal(f"{value:.{int(kind.get('scale', 0))}f}")
            record[name] = value
        elif "default" in field:
            digest = hashlib.blake2s(str(payload.get("event_id", "")).encode(), digest_size=2).digest()
            record[name] = CHANNELS[digest[0] % len(CHANNELS)] if name == "channel" else field["default"]
    return record


def _guarded(serialize: Encode, url: str, topic: str) -> Encode:
    """``serialize``, its registry failures (unreachable, incompatible schema) as one clear KappalakeError."""
    def encode(payload: dict[str, Any]) -> bytes:
        try:
            return serialize(payload)
        except Exception as exc:  # httpx transport errors, SchemaRegistryError, SerializationError
            raise KappalakeError(f"{topic}: writing with the schema registry at {url} failed: "
                                 f"{type(exc).__name__}: {exc}") from None
    return encode


def _registry(ctx: RunContext) -> tuple[Any, str]:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from kappalake.io.registry.plans import registry_url

    config = ctx.target.schema_registry
    if config is None:
        raise ConfigError(f"target {ctx.target.name!r} has no schema_registry section; the Confluent wire format "
                          "needs one")
    url = registry_url(ctx)
    assert url is not None
    return SchemaRegistryClient(client_conf(config, url)), url


def _strategy(name: str) -> Any:
    from confluent_kafka.schema_registry import (record_subject_name_strategy, topic_record_subject_name_strategy,
                                                 topic_subject_name_strategy)

    return {"topic_name": topic_subject_name_strategy, "record_name": record_subject_name_strategy,
            "topic_record_name": topic_record_subject_name_strategy}[name]


def avro_encoder(ctx: RunContext, topic: str, evolve_after: int | None = None) -> Encode:
    """Avro values for the pipeline's topic (Confluent wire format, or plain)."""
    from confluent_kafka.serialization import MessageField, SerializationContext

    avro = ctx.pipeline.events.avro
    assert avro is not None
    reader = json.loads(Path(avro.schema_file).read_text())
    versions = [older_version(reader), reader] if evolve_after is not None else [reader]
    if avro.wire == "plain":
        from fastavro import parse_schema, schemaless_writer

        writer = json.loads(Path(avro.writer_schema).read_text()) if avro.writer_schema else reader
        parsed = parse_schema(writer)

        def plain(payload: dict[str, Any]) -> bytes:
            out = io.BytesIO()
            schemaless_writer(out, parsed, avro_value(payload, writer))
            return out.getvalue()
        return plain
    from confluent_kafka.schema_registry.avro import AvroSerializer

    client, url = _registry(ctx)
    conf = {"auto.register.schemas": True, "subject.name.strategy": _strategy(ctx.pipeline.events.subject_strategy)}
    serializers = [(schema, AvroSerializer(client, json.dumps(schema), conf=conf)) for schema in versions]
    where = SerializationContext(topic, MessageField.VALUE)
    sent = 0

    def confluent(payload: dict[str, Any]) -> bytes:
        nonlocal sent
        schema, serializer = serializers[-1 if evolve_after is None or sent >= evolve_after else 0]
        sent += 1
        return serializer(avro_value(payload, schema), where)
    return _guarded(confluent, url, topic)


def protobuf_encoder(ctx: RunContext, topic: str) -> Encode:
    """Protobuf values of the pipeline's message (Confluent wire format, or plain)."""
    from kappalake.formats.protobuf_schema import load_message

    proto = ctx.pipeline.events.protobuf
    assert proto is not None
    schema = load_message(Path(proto.descriptor).read_bytes(), proto.message)
    message_class = schema.message_class

    def message(payload: dict[str, Any]) -> Any:
        msg = message_class()
        for name, value in payload.items():
            if name not in schema.descriptor.fields_by_name:
                continue
            field = getattr(msg, name)
            if isinstance(value, datetime):
                field.FromDatetime(value)
            elif hasattr(field, "CopyFrom"):
                raise ConfigError(f"protobuf field {name!r}: cannot set a {type(value).__name__}")
            else:
                setattr(msg, name, value if isinstance(value, type(field)) else type(field)(
                    f"{value:.2f}" if isinstance(value, float) and isinstance(field, str) else value))
        return msg

    if proto.wire == "plain":
        return lambda payload: message(payload).SerializeToString()
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client, url = _registry(ctx)
    serializer = ProtobufSerializer(message_class, client, conf={
        "auto.register.schemas": True, "use.deprecated.format": False,
        "subject.name.strategy": _strategy(ctx.pipeline.events.subject_strategy)})
    where = SerializationContext(topic, MessageField.VALUE)
    return _guarded(lambda payload: serializer(message(payload), where), url, topic)


def value_encoder(ctx: RunContext, topic: str, evolve_after: int | None = None) -> Encode | None:
    """The encoder of the pipeline's ``events.format`` (None: JSON, the generator's own)."""
    events = ctx.pipeline.events
    if evolve_after is not None and events.format != "avro":
        raise ConfigError(f"--evolve writes a second Avro schema version; pipeline {ctx.pipeline.name!r} reads "
                          f"{events.format}")
    if events.format == "avro":
        return avro_encoder(ctx, topic, evolve_after)
    if events.format == "protobuf":
        return protobuf_encoder(ctx, topic)
    return None
