"""Avro schema resolution and Schema Registry compatibility levels, in pure Python.

:func:`avro_incompatibilities` applies the resolution rules of the Avro specification ("Schema Resolution"),
as Avro's Java ``SchemaCompatibility`` (which the Confluent Schema Registry runs) does: records match by
unqualified name or by a reader alias, fields by name or reader field alias; a reader field missing in the
writer needs a default; writer fields missing in the reader are skipped; numeric promotion int→long/float/double,
long→float/double, float→double and string↔bytes; a writer union resolves when each branch does, a reader
union when one branch matches; enums, fixed, arrays and maps recursively. Logical types follow their
underlying types. :func:`check_compatibility` runs a registry compatibility level over earlier versions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
PROMOTIONS = {("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
              ("float", "double"), ("string", "bytes"), ("bytes", "string")}
LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE")

Node = Any  # str (primitive) | list (union) | dict (array, map, record, enum, fixed; named ones shared by identity)


@dataclass(frozen=True)
class AvroSchema:
    """A schema with the schemas it references (Schema Registry references), whose named types it may use."""

    schema: Any
    references: Sequence[Any] = field(default_factory=tuple)


def _load(schema: Any) -> Any:
    if isinstance(schema, str):
        try:
            return json.loads(schema)
        except ValueError:
            return schema  # a bare type name, e.g. "string" or "com.acme.Payment"
    return schema


def _full(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


class _Parser:
    """Turns schema JSON into nodes; named types are registered by full name and shared by identity."""

    def __init__(self) -> None:
        self.names: dict[str, dict[str, Any]] = {}

    def parse(self, schema: Any, namespace: str | None = None) -> Node:
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return schema
            for candidate in (_full(schema, namespace), schema):
                if candidate in self.names:
                    return self.names[candidate]
            raise ValueError(f"unknown type name {schema!r}")
        if isinstance(schema, list):
            return [self.parse(branch, namespace) for branch in schema]
        if not isinstance(schema, dict) or "type" not in schema:
            raise ValueError(f"not an Avro schema: {json.dumps(schema)[:200]}")
        kind = schema["type"]
        if kind == "array":
            return {"type": "array", "items": self.parse(schema["items"], namespace)}
        if kind == "map":
            return {"type": "map", "values": self.parse(schema["values"], namespace)}
        if kind not in ("record", "error", "enum", "fixed"):
            base = self.parse(kind, namespace)  # {"type": "long", "logicalType": ...} or a nested type
            logical = schema.get("logicalType")
            if isinstance(base, str) and logical:  # "bytes#decimal(12,2)", "long#timestamp-millis"
                params = f"({schema.get('precision')},{schema.get('scale', 0)})" if logical == "decimal" else ""
                return f"{base}#{logical}{params}"
            return base
        name = _full(schema["name"], schema.get("namespace", namespace))
        space = name.rpartition(".")[0] or None
        node: dict[str, Any] = {"type": "record" if kind == "error" else kind, "name": name,
                                "aliases": {_full(a, space) for a in schema.get("aliases", [])}}
        self.names[name] = node
        if kind == "enum":
            node.update(symbols=list(schema["symbols"]), default=schema.get("default"))
        elif kind == "fixed":
            node["size"] = int(schema["size"])
        else:
            node["fields"] = [{"name": f["name"], "aliases": set(f.get("aliases", [])), "has_default": "default" in f,
                               "type": self.parse(f["type"], space)} for f in schema["fields"]]
        return node


def _parse(schema: Any) -> Node:
    parser = _Parser()
    try:
        if isinstance(schema, AvroSchema):
            for reference in schema.references:
                parser.parse(_load(reference))
            schema = schema.schema
        return parser.parse(_load(schema))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a valid Avro schema ({type(exc).__name__}: {exc})") from None


def _describe(node: Node) -> str:
    if isinstance(node, str):
        return node.replace("#", " as ")
    if isinstance(node, list):
        return "union [" + ", ".join(_describe(b) for b in node) + "]"
    if "name" in node:
        return f"{node['type']} {node['name']}"
    return node["type"]


def _primitives_match(reader: str, writer: str) -> bool:
    """Same type or an Avro promotion. Logical types on both sides must be equal: a decimal of another
    scale or precision, or timestamp-micros read as -millis, would decode to wrong values."""
    if "#" in reader and "#" in writer:
        return reader == writer
    reader_base, writer_base = reader.split("#")[0], writer.split("#")[0]
    return reader_base == writer_base or (writer_base, reader_base) in PROMOTIONS


class _Resolver:
    def __init__(self) -> None:
        self.active: set[tuple[int, int]] = set()  # record pairs being compared (recursive types)

    def check(self, reader: Node, writer: Node, path: str) -> list[str]:
        where = f"field '{path}'" if path else "the top-level schema"
        if isinstance(writer, list):
            return [m for branch in writer for m in self.check(reader, branch, path)]
        if isinstance(reader, list):
            if any(not self.check(branch, writer, path) for branch in reader):
                return []
            return [f"{where}: writer type {_describe(writer)} cannot be read as reader type {_describe(reader)}"]
        if isinstance(reader, str) or isinstance(writer, str):
            if isinstance(reader, str) and isinstance(writer, str) and _primitives_match(reader, writer):
                return []
            return [f"{where}: writer type {_describe(writer)} cannot be read as reader type {_describe(reader)}"]
        kind = reader["type"]
        if kind != writer["type"]:
            return [f"{where}: writer type {_describe(writer)} cannot be read as reader type {_describe(reader)}"]
        if kind == "array":
            return self.check(reader["items"], writer["items"], path)
        if kind == "map":
            return self.check(reader["values"], writer["values"], path)
        if reader["name"].rpartition(".")[2] != writer["name"].rpartition(".")[2] \
                and writer["name"] not in reader["aliases"]:
            return [f"{where}: writer {kind} {writer['name']} cannot be read as reader {kind} {reader['name']} "
                    "(names differ and the reader has no alias for it)"]
        if kind == "fixed":
            if reader["size"] != writer["size"]:
                return [f"{where}: writer fixed {writer['name']} has size {writer['size']}, reader fixed "
                        f"{reader['name']} size {reader['size']}"]
            return []
        if kind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and reader["default"] is None:
                return [f"{where}: writer enum {writer['name']} has symbol(s) {', '.join(missing)} missing in "
                        f"reader enum {reader['name']}, which has no default"]
            return []
        return self._record(reader, writer, path)

    def _record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        key = (id(reader), id(writer))
        if key in self.active:
            return []
        self.active.add(key)
        try:
            by_name = {f["name"]: f for f in writer["fields"]}
            messages: list[str] = []
            for r in reader["fields"]:
                sub = f"{path}.{r['name']}" if path else r["name"]
                w = next((by_name[n] for n in (r["name"], *sorted(r["aliases"])) if n in by_name), None)
                if w is not None:
                    messages += self.check(r["type"], w["type"], sub)
                elif not r["has_default"]:
                    messages.append(f"field '{sub}' is missing in the writer schema and has no default in the "
                                    "reader schema")
            return messages
        finally:
            self.active.discard(key)


def avro_incompatibilities(reader: Any, writer: Any) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty: it can). Each schema is JSON
    text, parsed JSON or an :class:`AvroSchema` with references; ValueError when one is not valid Avro."""
    return _Resolver().check(_parse(reader), _parse(writer), "")


def validate(schema: Any) -> None:
    """Raise ValueError with the reason when ``schema`` (JSON text, parsed, or :class:`AvroSchema`) is not Avro."""
    import fastavro  # the reference parser: names, defaults of the right kind, duplicate definitions

    named: dict[str, Any] = {}
    references = schema.references if isinstance(schema, AvroSchema) else ()
    try:
        for reference in references:
            fastavro.parse_schema(_load(reference), named_schemas=named)
        fastavro.parse_schema(_load(schema.schema if isinstance(schema, AvroSchema) else schema),
                              named_schemas=named)
    except Exception as exc:  # fastavro raises SchemaParseException, UnknownType, KeyError, TypeError ...
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    _parse(schema)


def check_compatibility(level: str, new: Any, previous: Sequence[Any],
                        labels: Sequence[str] | None = None) -> list[str]:
    """Messages why ``new`` may not follow ``previous`` (oldest first) under ``level``; empty when it may.

    BACKWARD: ``new`` reads data written with the previous schema; FORWARD: the previous schema reads data
    written with ``new``; FULL: both. The non-transitive levels compare with the latest previous schema only.
    ``labels`` name the previous schemas in the messages (default ``previous schema N``)."""
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"unknown compatibility level {level!r}; valid: {', '.join(LEVELS)}")
    names = list(labels) if labels is not None else [f"previous schema {i + 1}" for i in range(len(previous))]
    pairs = list(zip(names, previous))
    if level == "NONE" or not pairs:
        return []
    if not level.endswith("_TRANSITIVE"):
        pairs = pairs[-1:]
    messages: list[str] = []
    for label, old in reversed(pairs):
        if level.startswith(("BACKWARD", "FULL")):
            messages += [f"{label} (backward: new schema reading old data): {m}"
                         for m in avro_incompatibilities(new, old)]
        if level.startswith(("FORWARD", "FULL")):
            messages += [f"{label} (forward: old schema reading new data): {m}"
                         for m in avro_incompatibilities(old, new)]
    return messages
