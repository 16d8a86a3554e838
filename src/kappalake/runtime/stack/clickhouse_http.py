"""The ClickHouse HTTP interface on 127.0.0.1 over one chDB data directory.

``python -m kappalake.runtime.stack.clickhouse_http --path DIR --port P`` owns ``DIR`` (chDB allows one
process per directory) and answers clickhouse-connect's HTTP client as a server does: the query in the URL
and/or the body, settings and ``param_*`` as URL parameters, insert data after ``FORMAT F`` (compressed by
``Content-Encoding``: lz4, zstd, gzip, deflate, br), results uncompressed in the requested format, errors
as ``Code: N. DB::Exception: ...`` with ``X-ClickHouse-Exception-Code``. The password, if any, comes from
``KAPPALAKE_CLICKHOUSE_PASSWORD`` (user ``default``). SIGTERM stops it cleanly and releases the directory.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
import zlib
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from kappalake.runtime.stack.chdb_executor import ChdbExecutor, QueryError, Result, as_query_error

PASSWORD_ENV = "KAPPALAKE_CLICKHOUSE_PASSWORD"
LOG_LEVEL_ENV = "KAPPALAKE_CLICKHOUSE_LOG_LEVEL"  # DEBUG logs every request; default INFO: start, stop, errors
USER = "default"
DISPLAY_NAME = "kappalake-chdb"
log = logging.getLogger("kappalake.clickhouse_http")

# URL parameters the HTTP layer consumes: never passed to the engine as settings.
TRANSPORT = {"query", "database", "default_format", "session_id", "session_timeout", "session_check", "query_id",
             "wait_end_of_query", "compress", "decompress", "enable_http_compression", "user", "password",
             "quota_key", "buffer_size", "client_protocol_version", "role", "send_progress_in_http_headers",
             "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
             "http_zlib_compression_level", "http_native_compression_disable_checksumming_on_decompress"}
CONTENT_TYPES = {"TabSeparated": "text/tab-separated-values; charset=UTF-8", "TSV": "text/tab-separated-values; "
                 "charset=UTF-8", "CSV": "text/csv; charset=UTF-8", "JSON": "application/json; charset=UTF-8",
                 "JSONCompact": "application/json; charset=UTF-8", "JSONEachRow": "application/x-ndjson; "
                 "charset=UTF-8"}
STATUS = {516: 401, 62: 400, 27: 400, 36: 400, 115: 400, 60: 404, 81: 404, 372: 404, 159: 504, 241: 500}


def decompress(data: bytes, encoding: str) -> bytes:
    """A request body as sent with ``Content-Encoding`` (clickhouse-connect sends one lz4/zstd frame per
    block, so every frame is read)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    if encoding == "zstd":
        from clickhouse_connect.driver.compression import _zstd_decompress

        return _zstd_decompress(data)
    if encoding == "br":
        import brotli

        return bytes(brotli.decompress(data))
    if encoding == "lz4":
        import lz4.frame

        out, rest = bytearray(), data
        while rest:
            decompressor = lz4.frame.LZ4FrameDecompressor()
            out += decompressor.decompress(rest)
            rest = decompressor.unused_data
        return bytes(out)
    raise QueryError(1, f"Code: 1. DB::Exception: Unknown Content-Encoding {encoding!r}. (UNSUPPORTED_METHOD)")


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a ``multipart/form-data`` or urlencoded body (clickhouse-connect's form encoding)."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        if part.get_filename():
            raise QueryError(48, "Code: 48. DB::Exception: External data (file form fields) is not supported "
                                 "by this endpoint. (NOT_IMPLEMENTED)")
        fields[str(part.get_param("name", header="content-disposition"))] = part.get_content()
    return fields


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EndpointServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
        log.debug(format, *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        body = self._body()
        args = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = args.get("query_id") or str(uuid.uuid4())
        text, encoding = b"", ""
        if url.path.rstrip("/") == "/ping" or (url.path == "/" and "query" not in args and not body):
            self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            return
        try:
            self._authenticate(args)
            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
                args.update(form_fields(content_type, body))
                body = b""
            encoding = self.headers.get("Content-Encoding", "")
            body = decompress(body, encoding)
            query = args.get("query", "")
            text = (query.encode() + b"\n" if query else b"") + body
            if not text.strip():
                raise QueryError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
            result = self._execute(text, args)
            headers = {"Content-Type": CONTENT_TYPES.get(result.format or "", "application/octet-stream"),
                       "X-ClickHouse-Summary": json.dumps(result.summary)}
            if result.format:
                headers["X-ClickHouse-Format"] = result.format
            self._send(200, result.body, headers, query_id)
            status = 200
        except Exception as exc:  # noqa: BLE001 - every failure is answered as ClickHouse does
            error = exc if isinstance(exc, QueryError) else as_query_error(exc)
            status = STATUS.get(error.code, 500)
            message = f"{error.message} (version {self.server.executor.version})\n"
            self._send(status, message.encode(), {"Content-Type": "text/plain; charset=UTF-8",
                                                  "X-ClickHouse-Exception-Code": str(error.code)}, query_id)
        # Errors always; every request only at debug (a 1-second trigger makes several requests a second).
        log.log(logging.WARNING if status >= 400 else logging.DEBUG, "%s %s %d %.0fms%s %s", self.command,
                query_id, status, (time.monotonic() - started) * 1000, f" ({encoding})" if encoding else "",
                text[:80].decode(errors="replace").replace("\n", " "))

    def _execute(self, text: bytes, args: dict[str, str]) -> Result:
        executor = self.server.executor
        session_id = args.get("session_id") or None
        if session_id and args.get("session_check") == "1" and session_id not in executor.sessions:
            raise QueryError(372, f"Code: 372. DB::Exception: Session {session_id} not found. (SESSION_NOT_FOUND)")
        settings = {k: v for k, v in args.items() if k not in TRANSPORT and not k.startswith("param_")}
        params = {k.removeprefix("param_"): v for k, v in args.items() if k.startswith("param_")}
        return executor.execute(text, settings=settings, params=params, database=args.get("database") or None,
                                default_format=args.get("default_format") or "TabSeparated",
                                session_id=session_id, session_timeout=float(args.get("session_timeout") or 60))

    def _authenticate(self, args: dict[str, str]) -> None:
        user, password = USER, ""
        authorization = self.headers.get("Authorization", "")
        if authorization.lower().startswith("basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode(errors="replace").partition(":")
        user = self.headers.get("X-ClickHouse-User") or args.get("user") or user
        password = self.headers.get("X-ClickHouse-Key") or args.get("password") or password
        if user != USER or not hmac.compare_digest(password.encode(), self.server.password.encode()):
            raise QueryError(516, f"Code: 516. DB::Exception: {user}: Authentication failed: password is incorrect, "
                                  "or there is no user with such name. (AUTHENTICATION_FAILED)")

    def _send(self, status: int, body: bytes, headers: dict[str, str], query_id: str | None = None) -> None:
        self.send_response(status)
        executor = self.server.executor
        base = {"X-ClickHouse-Server-Display-Name": DISPLAY_NAME, "X-ClickHouse-Timezone": executor.timezone,
                "Content-Length": str(len(body)), "Keep-Alive": "timeout=10"}
        if query_id:
            base["X-ClickHouse-Query-Id"] = query_id
        for name, value in {**base, **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class EndpointServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], executor: ChdbExecutor, password: str) -> None:
        super().__init__(address, Handler)
        self.executor = executor
        self.password = password


def serve(path: str, host: str, port: int, password: str) -> None:
    """Serve until SIGTERM/SIGINT, then close the engine (releasing the directory)."""
    os.makedirs(path, exist_ok=True)
    try:
        executor = ChdbExecutor(path)
    except Exception as exc:  # noqa: BLE001 - one clear line for the log tail that 'up' shows
        raise SystemExit(f"cannot open the chDB directory {path}: {str(exc).strip()}; chDB allows one process per "
                         "directory: stop the process using it (a gold job or notebook with a chdb:// DSN)") from None
    server = EndpointServer((host, port), executor, password)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("ClickHouse HTTP on %s:%d over chDB %s at %s (auth: %s)", host, port, executor.version, path,
             "password" if password else "none")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        executor.close()
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="the chDB data directory")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get(LOG_LEVEL_ENV, "INFO").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    serve(os.path.abspath(args.path), args.host, args.port, os.environ.get(PASSWORD_ENV, ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
