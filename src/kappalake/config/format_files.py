"""Resolve a pipeline's schema files (Avro .avsc, Protobuf descriptor sets) against the conf directory.

Runs when a pipeline loads, so a missing file or a field the schema does not have is a configuration
error naming the file, before any job starts. For Avro, fields of the reader schema that ``events.schema``
does not declare are added with their mapped type: silver's columns follow the reader schema.
"""

from __future__ import annotations

from pathlib import Path

from kappalake.config.models import EventsConfig, FieldSpec, PipelineConfig
from kappalake.formats.avro_schema import AvroSchemaError, load_avsc, reader_fields


def _absolute(conf_dir: Path, value: str) -> str:
    path = Path(value)
    return str(path if path.is_absolute() else (conf_dir / path).resolve())


def _avro(events: EventsConfig, conf_dir: Path, where: str) -> EventsConfig:
    assert events.avro is not None
    reader_path = _absolute(conf_dir, events.avro.schema_file)
    writer_path = _absolute(conf_dir, events.avro.writer_schema) if events.avro.writer_schema else None
    try:
        fields = reader_fields(load_avsc(Path(reader_path)), reader_path)
        if writer_path:
            load_avsc(Path(writer_path))
    except AvroSchemaError as exc:
        raise ValueError(f"{where}.avro: {exc}") from None
    declared = dict(events.schema_)
    for name, spec in declared.items():
        if name not in fields:
            raise ValueError(f"{where}.schema: field {name!r} is not in the Avro reader schema {reader_path} "
                             f"(its fields: {', '.join(fields)})")
    merged = {**declared, **{name: FieldSpec(type=t) for name, t in fields.items() if name not in declared}}
    avro = events.avro.model_copy(update={"schema_file": reader_path, "writer_schema": writer_path})
    return events.model_copy(update={"avro": avro, "schema_": merged})


def _protobuf(events: EventsConfig, conf_dir: Path, where: str) -> EventsConfig:
    assert events.protobuf is not None
    path = _absolute(conf_dir, events.protobuf.descriptor)
    if not Path(path).is_file():
        raise ValueError(f"{where}.protobuf.descriptor: {path} not found (a FileDescriptorSet: protoc "
                         "--include_imports --descriptor_set_out=FILE your.proto)")
    from kappalake.formats.protobuf_schema import load_message, spark_fields
    try:
        fields = dict(spark_fields(load_message(Path(path).read_bytes(), events.protobuf.message)))
    except ValueError as exc:
        raise ValueError(f"{where}.protobuf: {path}: {exc}") from None
    missing = [name for name in events.schema_ if name not in fields]
    if missing:
        raise ValueError(f"{where}.schema: field {missing[0]!r} is not in message {events.protobuf.message} "
                         f"(its fields: {', '.join(fields)})")
    return events.model_copy(update={"protobuf": events.protobuf.model_copy(update={"descriptor": path})})


def resolve_format_files(config: PipelineConfig, conf_dir: Path) -> PipelineConfig:
    """``config`` with absolute schema paths (and, for Avro, the reader schema's fields); ValueError naming
    the file and field on a problem."""
    events = config.events
    if events.format == "avro":
        events = _avro(events, conf_dir, "events")
    elif events.format == "protobuf":
        events = _protobuf(events, conf_dir, "events")
    else:
        return config
    return config.model_copy(update={"events": events})
