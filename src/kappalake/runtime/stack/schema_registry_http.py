"""A local stand-in for the Confluent Schema Registry: the REST calls clients make, over a JSON file.

``python -m kappalake.runtime.stack.schema_registry_http --port P --data-dir D`` serves subjects, versions,
global schema ids, lookups, soft/hard deletes, compatibility tests and config in the Confluent v1 REST
dialect (same paths, bodies, status and error codes: 40401 subject, 40402 version, 40403 schema not found,
40404-40407 delete order, 40408 no subject config, 42201 invalid schema, 42202 invalid version, 42203 invalid
level, 409 incompatible). The store ``D/registry.json`` is rewritten atomically on every change.

Schema identity is the type, the text (Avro and JSON compared as compact JSON, which is also what is stored
for them) and the references; equal schemas share one global id across subjects. Compatibility:

- AVRO: the Avro resolution rules of :mod:`kappalake.formats.avro_compat` at the subject's level (references
  supply named types).
- PROTOBUF: the confluent-kafka ProtobufSerializer registers a base64-encoded ``FileDescriptorProto``; for that
  form, a message of the previous schema that is gone, or a field number reused with a wire-incompatible type
  or another message/enum type, is incompatible (any level but NONE). Text ``.proto`` schemas are stored and
  served as given (``?format=serialized`` cannot convert them here) and accepted without a check.
- JSON: must be JSON; accepted without a compatibility check.

``KAPPALAKE_REGISTRY_AUTH=user:password`` in the environment makes every request need that basic auth (401).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import os
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from kappalake.formats.avro_compat import LEVELS, AvroSchema, check_compatibility, validate

AUTH_ENV = "KAPPALAKE_REGISTRY_AUTH"
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
TYPES = ("AVRO", "JSON", "PROTOBUF")
# Protobuf scalar kinds that decode each other's wire bytes (Confluent's FIELD_SCALAR_KIND_CHANGED groups).
WIRE_GROUPS = [{3, 4, 5, 8, 13}, {17, 18}, {7, 15}, {6, 16}, {9, 12}]  # varint, zigzag, fixed32, fixed64, len


class ApiError(Exception):
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
        entry = self.data["schemas"].get(str(schema_id))
        if entry is None or not self.uses(schema_id):
            raise ApiError(404, 40403, f"Schema {schema_id} not found")
        return entry

    def uses(self, schema_id: int) -> list[tuple[str, dict[str, Any]]]:
        return [(s, v) for s, vs in self.data["subjects"].items() for v in vs if v["id"] == schema_id]

    def schema_json(self, schema_id: int) -> dict[str, Any]:
        entry = self.data["schemas"][str(schema_id)]
        body: dict[str, Any] = {"schema": entry["schema"]}
        if entry["schemaType"] != "AVRO":
            body["schemaType"] = entry["schemaType"]
        if entry["references"]:
            body["references"] = entry["references"]
        return body

    def registered(self, subject: str, v: dict[str, Any]) -> dict[str, Any]:
        return {"subject": subject, "version": v["version"], "id": v["id"],
                "guid": self.data["schemas"][str(v["id"])]["guid"], **self.schema_json(v["id"])}

    def level(self, subject: str | None) -> str:
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
        for v in reversed(self.data["subjects"].get(subject, [])):
            if (deleted or not v["deleted"]) and self.same(v["id"], schema):
                return v
        return None

    def same(self, schema_id: int, schema: dict[str, Any]) -> bool:
        entry = self.data["schemas"][str(schema_id)]
        return all(entry[k] == schema[k] for k in ("schema", "schemaType", "references"))

    def incompatibilities(self, subject: str, schema: dict[str, Any], against: list[dict[str, Any]],
                          level: str) -> list[str]:
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


def flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].strip().lower() == "true"


def route(registry: Registry, method: str, parts: list[str], query: dict[str, list[str]], body: Any) -> Any:
    """The JSON answer of one request; ApiError for the error answers."""
    deleted = flag(query, "deleted") or flag(query, "deleted_only") or flag(query, "deletedOnly")
    only_deleted = flag(query, "deleted_only") or flag(query, "deletedOnly")
    head, n = (parts[0] if parts else ""), len(parts)
    with registry.lock:
        if method == "GET" and n == 0:
            return {}
        if method == "GET" and parts == ["schemas", "types"]:
            return list(TYPES)
        if method == "GET" and head == "schemas" and n >= 3 and parts[1] in ("ids", "guids"):
            if parts[1] == "guids":
                match = [int(i) for i, e in registry.data["schemas"].items() if e["guid"] == parts[2]]
                schema_id = match[0] if match else -1
            else:
                schema_id = int(parts[2]) if re.fullmatch(r"-?\d+", parts[2]) else -1
            entry = registry.schema(schema_id)
            uses = [(s, v) for s, v in registry.uses(schema_id) if deleted or not v["deleted"]]
            if "subject" in query and parts[3:]:
                uses = [(s, v) for s, v in uses if s == query["subject"][-1]]
            if parts[3:] == ["versions"]:
                return [{"subject": s, "version": v["version"]} for s, v in uses]
            if parts[3:] == ["subjects"]:
                return sorted({s for s, _ in uses})
            if parts[3:] == ["schema"]:
                return Raw(entry["schema"])
            if n == 3:
                return registry.schema_json(schema_id)
        if head == "subjects" and n == 1 and method == "GET":
            prefix = query.get("subjectPrefix", [""])[-1]
            return sorted(s for s, vs in registry.data["subjects"].items() if s.startswith(prefix) and any(
                (v["deleted"] if only_deleted else deleted or not v["deleted"]) for v in vs))
        if head == "subjects" and n >= 2:
            subject = parts[1]
            if n == 2 and method == "POST":
                schema = registry.parse(body)
                registry.versions(subject, deleted)
                found = registry.find(subject, schema, deleted)
                if found is None:
                    raise ApiError(404, 40403, "Schema not found")
                return registry.registered(subject, found)
            if n == 2 and method == "DELETE":
                return registry.delete(subject, None, flag(query, "permanent"))
            if n == 3 and parts[2] == "versions" and method == "GET":
                return [v["version"] for v in registry.versions(subject, deleted) if v["deleted"] or not only_deleted]
            if n == 3 and parts[2] == "versions" and method == "POST":
                return {"id": registry.register(subject, body)["id"]}
            if n == 4 and parts[2] == "versions" and method == "DELETE":
                return registry.delete(subject, parts[3], flag(query, "permanent"))
            if n >= 4 and parts[2] == "versions" and method == "GET":
                v = registry.version(subject, parts[3], deleted)
                if n == 4:
                    return registry.registered(subject, v)
                if parts[4:] == ["schema"]:
                    return Raw(registry.data["schemas"][str(v["id"])]["schema"])
                if parts[4:] == ["referencedby"]:
                    return sorted({int(i) for i, e in registry.data["schemas"].items() if registry.uses(int(i))
                                   and {"subject": subject, "version": v["version"]} in
                                   [{"subject": r["subject"], "version": r["version"]} for r in e["references"]]})
        if head == "compatibility" and method == "POST" and n in (4, 5) and parts[1] == "subjects" \
                and parts[3] == "versions":
            subject, schema = parts[2], registry.parse(body)
            level = registry.level(subject)
            if n == 5 and parts[4] not in ("latest", "-1"):
                against, level = [registry.version(subject, parts[4])], level.replace("_TRANSITIVE", "")
            else:
                live = [v for v in registry.data["subjects"].get(subject, []) if not v["deleted"]]
                against = live if n == 4 else live[-1:]
            messages = registry.incompatibilities(subject, schema, against, level)
            return {"is_compatible": not messages, **({"messages": messages} if flag(query, "verbose") else {})}
        if head == "config" and n <= 2:
            subject = parts[1] if n == 2 else None
            if method == "GET":
                level = registry.data["config"].get(subject) if subject else registry.data["global"]
                if level is None and not flag(query, "defaultToGlobal"):
                    raise ApiError(404, 40408, f"Subject '{subject}' does not have subject-level compatibility "
                                               "configured")
                return {"compatibilityLevel": level or registry.data["global"]}
            if method == "PUT":
                return registry.set_level(subject, body if isinstance(body, dict) else {})
            if method == "DELETE":
                if subject is None:
                    old, registry.data["global"] = registry.data["global"], "BACKWARD"
                else:
                    registry.versions(subject, deleted=True)
                    old = registry.data["config"].pop(subject, None) or registry.data["global"]
                registry.save()
                return {"compatibilityLevel": old}
        if head == "mode" and n <= 2 and method in ("GET", "PUT"):
            mode = str((body or {}).get("mode", "READWRITE")).upper() if method == "PUT" else "READWRITE"
            if mode != "READWRITE":
                raise ApiError(422, 42204, f"Invalid mode {mode!r}: this local registry is always READWRITE")
            return {"mode": mode}
        if method == "GET" and parts == ["contexts"]:
            return ["."]
    raise ApiError(404, 404, "HTTP 404 Not Found")


class Raw(str):
    """A schema served as itself (``.../schema`` endpoints), not as a JSON string."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def _handle(self) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, answer = 200, None
        try:
            self._authorize()
            body = json.loads(raw) if raw.strip() else None
            if self.command in ("POST", "PUT") and body is not None and not isinstance(body, dict):
                raise ApiError(422, 422, "Unrecognized request body: expected a JSON object")
            parts = [unquote(p) for p in url.path.strip("/").split("/")] if url.path.strip("/") else []
            query = parse_qs(url.query)
            answer = route(self.server.registry, self.command, parts, query, body)
            if isinstance(answer, list) and self.command == "GET":  # pagination: ?offset=&limit= (-1: all)
                offset, limit = int(query.get("offset", ["0"])[-1]), int(query.get("limit", ["-1"])[-1])
                answer = answer[max(offset, 0):] if limit < 0 else answer[max(offset, 0):max(offset, 0) + limit]
        except ApiError as exc:
            status, answer = exc.status, {"error_code": exc.code, "message": exc.message}
        except ValueError as exc:
            status, answer = 400, {"error_code": 400, "message": f"Bad request: {exc}"}
        except Exception as exc:  # a bug here must not kill the connection without an answer
            status, answer = 500, {"error_code": 50001, "message": f"Error in the backend data store: {exc!r}"}
        data = (answer if isinstance(answer, Raw) else json.dumps(answer)).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="kappalake-schema-registry"')
        self.end_headers()
        self.wfile.write(data)
        sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.command} {url.path}"
                         f"{'?' + url.query if url.query else ''} {status} {(time.monotonic() - started) * 1000:.1f}ms\n")
        sys.stderr.flush()

    def _authorize(self) -> None:
        expected = self.server.auth
        if not expected:
            return
        header = self.headers.get("Authorization", "")
        try:
            given = base64.b64decode(header[6:], validate=True) if header[:6].lower() == "basic " else b""
        except (binascii.Error, ValueError):
            given = b""
        if not hmac.compare_digest(given, expected.encode()):
            raise ApiError(401, 401, "Unauthorized")

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _handle logs one line per request itself


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, registry: Registry, auth: str | None) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.registry, self.auth = registry, auth


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    import signal
    parser = argparse.ArgumentParser(description="Local Confluent-compatible Schema Registry")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    server = Server(args.port, Registry(args.data_dir), os.environ.get(AUTH_ENV) or None)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"schema registry listening on http://127.0.0.1:{args.port} (store {server.registry.file}, "
          f"auth {'on' if server.auth else 'off'})", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
