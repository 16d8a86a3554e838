"""Avro reader schemas of a pipeline: their top-level fields as kappalake field types.

Silver's columns follow the reader schema: a field of the .avsc that ``events.schema`` does not declare
is added with the type mapped here, so a new field reaches silver by editing the .avsc (and restarting).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_PRIMITIVE = {"string": "string", "int": "int", "long": "long", "float": "float", "double": "double",
              "boolean": "boolean", "enum": "string"}


class AvroSchemaError(ValueError):
    """A reader schema kappalake cannot use; the message names the file and the field."""


def load_avsc(path: Path) -> dict[str, Any]:
    """The record schema in ``path``; AvroSchemaError when it is unreadable or not a record."""
    try:
        schema = json.loads(path.read_text())
    except FileNotFoundError:
        raise AvroSchemaError(f"{path}: Avro schema file not found") from None
    except ValueError as exc:
        raise AvroSchemaError(f"{path}: not a JSON Avro schema ({exc})") from None
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise AvroSchemaError(f"{path}: the top-level Avro schema must be a record")
    try:
        from fastavro import parse_schema
        parse_schema(schema)
    except Exception as exc:  # fastavro raises several types for invalid schemas
        raise AvroSchemaError(f"{path}: invalid Avro schema: {exc}") from None
    return schema


def record_name(schema: dict[str, Any]) -> str:
    """The record's full name (namespace.name), as the RecordName subject strategy uses it."""
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return f"{namespace}.{name}" if namespace and "." not in name else name


def _field_type(avro_type: Any, where: str) -> str:
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1:
            raise AvroSchemaError(f"{where}: unions other than [null, T] are not supported as payload fields")
        return _field_type(branches[0], where)
    if isinstance(avro_type, str):
        if avro_type in _PRIMITIVE:
            return _PRIMITIVE[avro_type]
        if avro_type == "bytes":
            raise AvroSchemaError(f"{where}: plain bytes are not supported as a payload field (use a decimal "
                                  "logical type or string)")
        raise AvroSchemaError(f"{where}: named type {avro_type!r} is not supported as a payload field")
    logical, base = avro_type.get("logicalType"), avro_type.get("type")
    if logical == "decimal" and base in ("bytes", "fixed"):
        return f"decimal({int(avro_type['precision'])},{int(avro_type.get('scale', 0))})"
    if logical in ("timestamp-millis", "timestamp-micros") and base == "long":
        return "timestamp"
    if logical == "date" and base == "int":
        return "date"
    if base == "enum":
        return "string"
    if isinstance(base, str) and base in _PRIMITIVE:
        return _PRIMITIVE[base]
    raise AvroSchemaError(f"{where}: Avro type {json.dumps(avro_type)} is not supported as a payload field "
                          "(nested records, arrays and maps are not yet)")


def reader_fields(schema: dict[str, Any], source: str) -> dict[str, str]:
    """Top-level field name -> kappalake type (``string``, ``decimal(12,2)``, ``timestamp`` ...)."""
    return {f["name"]: _field_type(f["type"], f"{source}: field {f['name']!r}") for f in schema["fields"]}
