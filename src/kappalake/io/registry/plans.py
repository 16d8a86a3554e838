"""Build a query's decoder from its pipeline, the registry and the schema cache (the I/O side of decoding).

At query start the plan holds every writer schema the cache knows and every version the registry lists
for the topic's subject. When the registry does not answer, the job starts with the cached schemas only
(a restart keeps running through a registry outage). A writer schema the reader schema cannot read is a
clear error naming the subject, the version and the field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kappalake.config.formats import subject_for
from kappalake.errors import ConfigError, KappalakeError
from kappalake.formats.avro_compat import avro_incompatibilities
from kappalake.formats.avro_schema import load_avsc, record_name
from kappalake.io.registry.client import LOCAL_STACK, RegistrySchemas, RegistryUnavailable
from kappalake.runtime.context import RunContext
from kappalake.transforms.decode_avro import AvroPlan, decode_avro, mark_unknown_ids

from pyspark.sql import DataFrame

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
Decoder = Callable[[DataFrame], DataFrame]


class SchemaIncompatible(KappalakeError):
    """A writer schema of the topic that the pipeline's reader schema cannot read."""


def registry_url(ctx: RunContext) -> str | None:
    """The target's registry URL (``local-stack``: the endpoint of ``kappalake stack up``)."""
    config = ctx.target.schema_registry
    if config is None:
        return None
    if config.url == LOCAL_STACK:
        from kappalake.runtime.stack import SchemaRegistryEndpoint

        endpoint = SchemaRegistryEndpoint(ctx.layout)
        # stopped: its last address, so a job starts on its cached schemas and retries there
        return endpoint.last_url() or endpoint.url()
    return config.url


def schema_store(spark: SparkSession, ctx: RunContext) -> RegistrySchemas:
    """The pipeline's schemas: cached under its checkpoints (``_schemas``), fetched from the target's registry."""
    if ctx.pipeline.events.wire == "confluent" and ctx.target.schema_registry is None:
        raise ConfigError(f"pipeline {ctx.pipeline.name!r} reads {ctx.pipeline.events.format} in the Confluent wire "
                          f"format but target {ctx.target.name!r} has no schema_registry section")
    return RegistrySchemas(spark, ctx.schema_cache_path(), ctx.target.schema_registry, registry_url(ctx))


def subjects(ctx: RunContext, reader_name: str) -> list[str]:
    """The subjects of the pipeline's topics under its naming strategy."""
    strategy = ctx.pipeline.events.subject_strategy
    return sorted({subject_for(strategy, topic, reader_name) for topic in ctx.pipeline.source.topics})


def avro_plan(ctx: RunContext, store: RegistrySchemas | None) -> AvroPlan:
    """The writer schemas known now (cache + registry), checked against the reader schema."""
    avro = ctx.pipeline.events.avro
    assert avro is not None
    reader = load_avsc(Path(avro.schema_file))
    reader_text = Path(avro.schema_file).read_text()
    if avro.wire == "plain":
        writer = Path(avro.writer_schema).read_text() if avro.writer_schema else reader_text
        problems = avro_incompatibilities(reader_text, writer)
        if problems:
            raise SchemaIncompatible(f"pipeline {ctx.pipeline.name!r}: the writer schema {avro.writer_schema} "
                                     f"cannot be read with the reader schema {avro.schema_file}: {'; '.join(problems)}")
        return AvroPlan(reader=reader_text, wire="plain", plain_writer=writer)
    assert store is not None
    own = subjects(ctx, record_name(reader))
    known = store.cached()
    try:
        for subject in own:
            known.update({s.id: s for s in store.subject_versions(subject)})
    except RegistryUnavailable as exc:
        log.warning("pipeline %s: %s; starting with the %d cached writer schema(s)", ctx.pipeline.name, exc, len(known))
    writers: dict[int, str] = {}
    rejected: dict[int, str] = {}
    for schema in known.values():
        if schema.schema_type != "AVRO":
            rejected[schema.id] = f"schema id {schema.id} ({schema.label}) is a {schema.schema_type} schema, not Avro"
            continue
        problems = avro_incompatibilities(reader_text, schema.text)
        if not problems:
            writers[schema.id] = schema.text
            continue
        message = (f"writer schema {schema.label} (id {schema.id}) cannot be read with the reader schema "
                   f"{avro.schema_file}: {'; '.join(problems)}")
        if schema.subject in own:  # the topic's own subject took an incompatible version: stop, say why
            raise SchemaIncompatible(
                f"pipeline {ctx.pipeline.name!r}: {message}. Make the change compatible (a default for the new "
                "field, a widening type change) or move the pipeline to a new reader schema")
        rejected[schema.id] = message  # a stray record of another subject: dead-lettered with this reason
    return AvroPlan(reader=reader_text, writers=writers, rejected=rejected,
                    labels={i: s.label for i, s in known.items()})


def protobuf_known_ids(ctx: RunContext, store: RegistrySchemas) -> set[int]:
    """Ids of the Protobuf schemas the cache and the topic's subjects know now."""
    proto = ctx.pipeline.events.protobuf
    assert proto is not None
    known = {i for i, s in store.cached().items() if s.schema_type == "PROTOBUF"}
    try:
        for subject in subjects(ctx, proto.message):
            known.update(s.id for s in store.subject_versions(subject) if s.schema_type == "PROTOBUF")
    except RegistryUnavailable as exc:
        log.warning("pipeline %s: %s; starting with the %d cached schema id(s)", ctx.pipeline.name, exc, len(known))
    return known


def decoder_for(spark: SparkSession, ctx: RunContext,
                tombstones: bool = False) -> tuple[Decoder | None, RegistrySchemas | None]:
    """The pipeline's decoder (None: JSON, the default) and, for the Confluent wire format of Avro, the
    schema store its batch writer resolves new ids with. ``tombstones``: Debezium tombstones are changes
    (silver's deletes) rather than records without a value."""
    events = ctx.pipeline.events
    if events.format == "json":
        return None, None
    if events.format == "debezium":
        from kappalake.transforms.decode_debezium import decode_debezium

        return (lambda records: decode_debezium(records, events, tombstones)), None
    if events.format == "protobuf":
        from kappalake.transforms.decode_protobuf import decode_protobuf

        proto = events.protobuf
        assert proto is not None
        descriptor = Path(proto.descriptor).read_bytes()
        fields = list(events.schema_)
        if proto.wire == "plain":
            return (lambda records: decode_protobuf(records, descriptor, proto.message, fields, "plain")), None
        # The message is parsed with the pipeline's descriptor; the id is still resolved like Avro's, so an
        # unregistered id is dead-lettered and an unknown one waits for the registry.
        store = schema_store(spark, ctx)
        ids = protobuf_known_ids(ctx, store)
        return (lambda records: mark_unknown_ids(
            decode_protobuf(records, descriptor, proto.message, fields, "confluent"), ids)), store
    store = schema_store(spark, ctx) if events.wire == "confluent" else None
    plan = avro_plan(ctx, store)
    return (lambda records: decode_avro(records, plan)), store
