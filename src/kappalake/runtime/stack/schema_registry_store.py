"""The state of the local Schema Registry (:mod:`.schema_registry_http`) and its operations, without HTTP.

:class:`Registry` keeps subjects, versions, global schema ids and compatibility levels in ``data_dir/registry.json``,
rewritten atomically (temp file, rename) on every change. Its operations raise :class:`ApiError` with the HTTP
status and Confluent code to answer (4040x not found or delete order, 4220x invalid input, 409 incompatible).

Schema identity is the type, the text (Avro and JSON compared as compact JSON, which is also what is stored
for them) and the references; equal schemas share one global id across subjects. Compatibility:

- AVRO: the Avro resolution rules of :mod:`kappalake.formats.avro_compat` at the subject's level (references
  supply named types).
- PROTOBUF: the confluent-kafka ProtobufSerializer registers a base64-encoded ``FileDescriptorProto``; for that
  form, a message of the previous schema that is gone, or a field number reused with a wire-incompatible type
  or another message/enum type, is incompatible (any level but NONE). Text ``.proto`` schemas are stored as
  given (nothing converts them to the serialized form) and accepted without a check.
- JSON: must be JSON; accepted without a compatibility check.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from kappalake.formats.avro_compat import LEVELS, AvroSchema, check_compatibility, validate

TYPES = ("AVRO", "JSON", "PROTOBUF")
# Protobuf scalar kinds that decode each other's wire bytes (Confluent's FIELD_SCALAR_KIND_CHANGED groups).
WIRE_GROUPS = [{3, 4, 5, 8, 13}, {17, 18}, {7, 15}, {6, 16}, {9, 12}]  # varint, zigzag, fixed32, fixed64, len


class ApiError(Exception):
    """An error answer: HTTP ``status``, Confluent ``code`` (``error_code``) and ``message``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def canonical(text: str, kind: str) -> str:
    """The stored form: compact JSON for AVRO/JSON (422 when not JSON), protobuf text or base64 as given."""
    if kind == "PROTOBUF":
        return text.strip()
    try:
        return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    except ValueError as exc:
        raise ApiError(422, 42201, f"Invalid schema: not JSON ({exc})") from None


def file_descriptor(text: str) -> Any:
    """The FileDescriptorProto of a base64-serialized protobuf schema; None for .proto text."""
    from google.protobuf import descriptor_pb2
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    proto = descriptor_pb2.FileDescriptorProto()
    try:
        proto.ParseFromString(raw)
    except Exception:  # google.protobuf.message.DecodeError
        return None
    return proto


def proto_messages(proto: Any) -> dict[str, dict[int, Any]]:
    """Full message name -> {field number: field} for every (nested) message of a FileDescriptorProto."""
    found: dict[str, dict[int, Any]] = {}

    def walk(messages: Any, prefix: str) -> None:
        for message in messages:
            name = f"{prefix}.{message.name}" if prefix else message.name
            found[name] = {f.number: f for f in message.field}
            walk(message.nested_type, name)
    walk(proto.message_type, proto.package)
    return found


def proto_incompatibilities(new: str, old: str) -> list[str]:
    """Messages removed and field numbers reused with another type, between two base64 FileDescriptorProtos."""
    new_proto, old_proto = file_descriptor(new), file_descriptor(old)
    if new_proto is None or old_proto is None:
        return []
    new_messages, messages = proto_messages(new_proto), []
    for name, fields in proto_messages(old_proto).items():
        if name not in new_messages:
            messages.append(f"message {name} was removed")
            continue
        for number, was in fields.items():
            now = new_messages[name].get(number)
            if now is None:
                continue
            same = now.type == was.type or any({now.type, was.type} <= group for group in WIRE_GROUPS)
            if not same or now.type_name != was.type_name or (now.label == 3) != (was.label == 3):
                messages.append(f"message {name} field {number} ('{was.name}' -> '{now.name}') changed its type")
    return messages


class Registry:
    """The subjects, versions, schemas and config, persisted in ``data_dir/registry.json``."""

    def __init__(self, data_dir: Path) -> None:
        self.file = data_dir / "registry.json"
        self.lock = threading.RLock()
        self.data: dict[str, Any] = {"next_id": 1, "schemas": {}, "subjects": {}, "config": {}, "global": "BACKWARD"}
        if self.file.exists():
            self.data.update(json.loads(self.file.read_text()))

    def save(self) -> None:
        """Write the state atomically: a temp file, then a rename over ``registry.json``."""
        temp = self.file.with_suffix(".json.tmp")
        temp.write_text(json.dumps(self.data, indent=1))
        os.replace(temp, self.file)

    # -- reading -------------------------------------------------------------------------------------------
    def versions(self, subject: str, deleted: bool = False) -> list[dict[str, Any]]:
        """The subject's versions (oldest first); 40401 when it has none (live ones unless ``deleted``)."""
        found = [v for v in self.data["subjects"].get(subject, []) if deleted or not v["deleted"]]
        if not found:
            raise ApiError(404, 40401, f"Subject '{subject}' not found.")
        return found

    def version(self, subject: str, version: str, deleted: bool = False) -> dict[str, Any]:
        """One version by number or ``latest``/``-1``; 42202 when not a version id, 40402 when absent."""
        found = self.versions(subject, deleted)
        if version in ("latest", "-1"):
            return [v for v in found if not v["deleted"]][-1] if not deleted else found[-1]
        if not re.fullmatch(r"\d+", version) or not 0 < int(version) < 2**31:
            raise ApiError(422, 42202, f"The specified version '{version}' is not a valid version id. Allowed "
                                       "values are between [1, 2^31-1] and the string \"latest\"")
        for v in found:
            if v["version"] == int(version):
                return v
        raise ApiError(404, 40402, f"Version {version} not found.")

    def schema(self, schema_id: int) -> dict[str, Any]:
        """The stored schema of a global id that some version uses; 40403 otherwise."""
        entry = self.data["schemas"].get(str(schema_id))
        if entry is None or not self.uses(schema_id):
            raise ApiError(404, 40403, f"Schema {schema_id} not found")
        return entry

    def uses(self, schema_id: int) -> list[tuple[str, dict[str, Any]]]:
        """(subject, version) pairs registered with the id, soft-deleted ones included."""
        return [(s, v) for s, vs in self.data["subjects"].items() for v in vs if v["id"] == schema_id]

    def schema_json(self, schema_id: int) -> dict[str, Any]:
        """The id's schema as the API shows it (``schemaType`` unless AVRO, ``references`` when any)."""
        entry = self.data["schemas"][str(schema_id)]
        body: dict[str, Any] = {"schema": entry["schema"]}
        if entry["schemaType"] != "AVRO":
            body["schemaType"] = entry["schemaType"]
        if entry["references"]:
            body["references"] = entry["references"]
        return body

    def registered(self, subject: str, v: dict[str, Any]) -> dict[str, Any]:
        """A subject version as the API shows it: subject, version, id, guid and the schema."""
        return {"subject": subject, "version": v["version"], "id": v["id"],
                "guid": self.data["schemas"][str(v["id"])]["guid"], **self.schema_json(v["id"])}

    def level(self, subject: str | None) -> str:
        """The compatibility level in force for the subject (its own, else the global one)."""
        return str(self.data["config"].get(subject) or self.data["global"])

    # -- schemas from requests -----------------------------------------------------------------------------
    def parse(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request's schema checked and in stored form: ``{schema, schemaType, references}``."""
        kind = str(body.get("schemaType") or "AVRO").upper()
        if kind not in TYPES:
            raise ApiError(422, 42201, f"Invalid schema type {kind!r}; supported: {', '.join(TYPES)}")
        if not isinstance(body.get("schema"), str):
            raise ApiError(422, 42201, "Invalid schema: the request needs a 'schema' string")
        references = [{"name": r["name"], "subject": r["subject"], "version": int(r["version"])}
                      for r in body.get("references") or []]
        text = canonical(body["schema"], kind)
        try:
            referenced = self.referenced(references)
            if kind == "AVRO":
                validate(AvroSchema(text, referenced))
        except ApiError as exc:
            raise ApiError(422, 42201, f"Invalid schema: {exc.message}") from None
        except ValueError as exc:
            raise ApiError(422, 42201, f"Invalid schema {text[:200]}: {exc}") from None
        if kind == "PROTOBUF" and file_descriptor(text) is None and not re.search(r"\b(message|syntax)\b", text):
            raise ApiError(422, 42201, "Invalid schema: neither a base64 FileDescriptorProto nor .proto text")
        return {"schema": text, "schemaType": kind, "references": references}

    def referenced(self, references: list[dict[str, Any]]) -> list[str]:
        """The texts of the referenced schemas and of theirs, dependencies first."""
        texts: list[str] = []
        for ref in references:
            entry = self.data["schemas"][str(self.version(ref["subject"], str(ref["version"]))["id"])]
            texts += self.referenced(entry["references"]) + [entry["schema"]]
        return texts

    def find(self, subject: str, schema: dict[str, Any], deleted: bool = False) -> dict[str, Any] | None:
        """The subject's newest version with this (parsed) schema, or None."""
        for v in reversed(self.data["subjects"].get(subject, [])):
            if (deleted or not v["deleted"]) and self.same(v["id"], schema):
                return v
        return None

    def same(self, schema_id: int, schema: dict[str, Any]) -> bool:
        """Whether the id's schema has this type, text and references."""
        entry = self.data["schemas"][str(schema_id)]
        return all(entry[k] == schema[k] for k in ("schema", "schemaType", "references"))

    def incompatibilities(self, subject: str, schema: dict[str, Any], against: list[dict[str, Any]],
                          level: str) -> list[str]:
        """Why ``schema`` is incompatible with the ``against`` versions of its type at ``level``; [] if it is not."""
        olds = [v for v in against if self.data["schemas"][str(v["id"])]["schemaType"] == schema["schemaType"]]
        if level == "NONE" or not olds:
            return []
        if not level.endswith("_TRANSITIVE"):
            olds = olds[-1:]
        entries = [self.data["schemas"][str(v["id"])] for v in olds]
        if schema["schemaType"] == "AVRO":
            new = AvroSchema(schema["schema"], self.referenced(schema["references"]))
            previous = [AvroSchema(e["schema"], self.referenced(e["references"])) for e in entries]
            return check_compatibility(level, new, previous, [f"version {v['version']}" for v in olds])
        if schema["schemaType"] == "PROTOBUF":
            return [f"version {v['version']}: {m}" for v, e in zip(olds, entries)
                    for m in proto_incompatibilities(schema["schema"], e["schema"])]
        return []

    # -- changes -------------------------------------------------------------------------------------------
    def register(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        """Add the body's schema as the subject's next version (or return the existing one); 409 if incompatible."""
        schema = self.parse(body)
        with self.lock:
            existing = self.find(subject, schema)
            if existing is not None:
                return self.registered(subject, existing)
            live = [v for v in self.data["subjects"].get(subject, []) if not v["deleted"]]
            messages = self.incompatibilities(subject, schema, live, self.level(subject))
            if messages:
                raise ApiError(409, 409, f"Schema being registered is incompatible with an earlier schema for "
                                         f"subject \"{subject}\", details: {messages}")
            schema_id = next((int(i) for i, e in self.data["schemas"].items() if self.same(int(i), schema)), None)
            if schema_id is None:
                schema_id = self.data["next_id"]
                self.data["next_id"] += 1
                guid = str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(schema, sort_keys=True)))
                self.data["schemas"][str(schema_id)] = {**schema, "guid": guid}
            versions = self.data["subjects"].setdefault(subject, [])
            entry = {"version": max((v["version"] for v in versions), default=0) + 1, "id": schema_id,
                     "deleted": False}
            versions.append(entry)
            self.save()
            return self.registered(subject, entry)

    def delete(self, subject: str, version: str | None, permanent: bool) -> Any:
        """Soft- or hard-delete a version (its number) or the whole subject (the version numbers)."""
        with self.lock:
            everything = self.versions(subject, deleted=True)
            targets = everything if version is None else [self.version(subject, version, deleted=True)]
            if version in ("latest", "-1"):
                targets = [self.version(subject, version)]
            what = f"Subject '{subject}'" + ("" if version is None else f" Version {targets[0]['version']}")
            if not permanent and version is None and all(v["deleted"] for v in targets):
                raise ApiError(404, 40404, f"{what} was soft deleted. Set permanent=true to delete permanently")
            if not permanent and version is not None and targets[0]["deleted"]:
                raise ApiError(404, 40406, f"{what} was soft deleted. Set permanent=true to delete permanently")
            if permanent and any(not v["deleted"] for v in targets):
                code = 40405 if version is None else 40407
                raise ApiError(404, code, f"{what} was not deleted first before being permanently deleted")
            done = [v["version"] for v in targets if permanent or not v["deleted"]]
            if permanent:
                self.data["subjects"][subject] = [v for v in everything if v not in targets]
                if not self.data["subjects"][subject]:
                    del self.data["subjects"][subject]
                    self.data["config"].pop(subject, None)
            else:
                for v in targets:
                    v["deleted"] = True
            self.save()
            return done if version is None else done[0]

    def set_level(self, subject: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """Set the global (``subject`` None) or subject level from ``compatibility``/``compatibilityLevel``."""
        level = str(body.get("compatibility") or body.get("compatibilityLevel") or "").upper()
        if level not in LEVELS:
            raise ApiError(422, 42203, "Invalid compatibility level. Valid values are none, backward, forward, "
                                       "full, backward_transitive, forward_transitive, and full_transitive")
        with self.lock:
            if subject is None:
                self.data["global"] = level
            else:
                self.data["config"][subject] = level
            self.save()
        return {"compatibility": level}

    def reset_level(self, subject: str | None) -> str:
        """Drop the subject's level (40401: unknown subject) or reset the global one to BACKWARD; the old level."""
        with self.lock:
            if subject is None:
                old, self.data["global"] = self.data["global"], "BACKWARD"
            else:
                self.versions(subject, deleted=True)
                old = self.data["config"].pop(subject, None) or self.data["global"]
            self.save()
        return old
