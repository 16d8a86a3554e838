"""A local stand-in for the Confluent Schema Registry: the REST calls clients make, over a JSON file.

``python -m kappalake.runtime.stack.schema_registry_http --port P --data-dir D`` serves subjects, versions,
global schema ids, lookups, soft/hard deletes, compatibility tests and config in the Confluent v1 REST
dialect (same paths, bodies, status and error codes: 40401 subject, 40402 version, 40403 schema not found,
40404-40407 delete order, 40408 no subject config, 42201 invalid schema, 42202 invalid version, 42203 invalid
level, 409 incompatible). The state, ``D/registry.json``, and its rules (schema identity, compatibility per
schema type) are those of :mod:`.schema_registry_store`; this module is the HTTP side: routing, basic auth,
one stderr log line per request.

Where it differs from the real registry: the mode is always READWRITE (setting another is 42204), the only
context is the default ``.``, and ``?format=serialized`` cannot convert text ``.proto`` schemas, which are
served as given.

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from kappalake.runtime.stack.schema_registry_store import TYPES, ApiError, Registry

AUTH_ENV = "KAPPALAKE_REGISTRY_AUTH"
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def flag(query: dict[str, list[str]], name: str) -> bool:
    """Whether the query parameter's last value is ``true`` (any case)."""
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
                return {"compatibilityLevel": registry.reset_level(subject)}
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
    """Answers each request through :func:`route` as JSON (errors as ``{error_code, message}``) and logs it."""

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
    """A threaded server on 127.0.0.1 with the registry and the expected ``user:password`` (None: no auth)."""

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
