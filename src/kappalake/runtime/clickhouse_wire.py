"""The parts of ClickHouse's HTTP interface that are plain rules: where a statement ends and its data
begins, what a statement returns, request bodies (chunked, compressed), error codes and HTTP statuses.

Used by the local ClickHouse endpoint (``clickhouse_server``); nothing here touches chDB.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

#: URL parameters of the HTTP interface itself; every other parameter is a ClickHouse setting.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "session_id", "session_timeout",
    "session_check", "query_id", "compress", "decompress", "buffer_size", "wait_end_of_query",
    "client_protocol_version", "role", "enable_http_compression", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "http_wait_end_of_query", "http_response_buffer_size",
    "cancel_http_readonly_queries_on_client_close", "add_http_cors_header", "http_zlib_compression_level",
    "http_native_compression_disable_checksumming_on_decompress", "stacktrace", "with_stacktrace",
})
#: Statements that produce a result set (ClickHouse then sends X-ClickHouse-Format).
RESULT_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXPLAIN", "EXISTS", "CHECK", "WATCH",
                             "KILL", "VALUES", "FROM", "TABLE"})
#: Statements allowed on GET (ClickHouse: "method GET implies readonly").
READ_KEYWORDS = RESULT_KEYWORDS | {"SET", "USE"}

# Error codes (ClickHouse src/Common/ErrorCodes.cpp) used by the endpoint itself.
NOT_IMPLEMENTED, SYNTAX_ERROR, READONLY, UNKNOWN_FORMAT = 48, 62, 164, 73
SESSION_NOT_FOUND, SESSION_IS_LOCKED, INVALID_SESSION_TIMEOUT = 372, 373, 374
AUTHENTICATION_FAILED, HTTP_LENGTH_REQUIRED, STD_EXCEPTION, UNKNOWN_TYPE_OF_QUERY = 516, 381, 1001, 78
CANNOT_DECOMPRESS, TIMEOUT_EXCEEDED, TOO_MANY_SIMULTANEOUS_QUERIES = 271, 159, 202
_BAD_REQUEST = {6, 26, 27, 38, 41, 53, 62, 117, 168, 169, 43, 72}  # parse errors, syntax, incorrect data, types
_NOT_FOUND = {46, 47, 50, 60, 73, 78, 81, 63, 115, 44, 36}  # unknown function/identifier/type/table/database...
_STATUS = {194: 401, 192: 403, 193: 403, 516: 403, 497: 403, 495: 403, 159: 408, 202: 503,
           381: 411, 48: 501, 209: 503, 210: 503, 372: 404, 373: 409, 374: 400}
_CODE = re.compile(r"Code: (\d+)")


class EndpointError(Exception):
    """A ClickHouse-style failure: ``Code: N. DB::Exception: ...`` with its error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def from_engine(cls, exc: BaseException) -> EndpointError:
        """chDB raises its messages as text ('Streaming insert failed: Code: 60. DB::Exception: ...')."""
        text = str(exc)
        start = text.find("Code: ")
        if start >= 0:
            text = text[start:]
            match = _CODE.match(text)
            return cls(int(match.group(1)) if match else STD_EXCEPTION, text.strip())
        return cls(STD_EXCEPTION, f"Code: {STD_EXCEPTION}. DB::Exception: {text or type(exc).__name__}. "
                                  "(STD_EXCEPTION)")

    @property
    def body(self) -> str:
        message = str(self)
        if not message.startswith("Code: "):
            message = f"Code: {self.code}. DB::Exception: {message}"
        return message.rstrip() + "\n"


def http_status(code: int) -> int:
    """The HTTP status ClickHouse answers an exception code with (exceptionCodeToHTTPStatus)."""
    if code in _STATUS:
        return _STATUS[code]
    if code in _BAD_REQUEST:
        return 400
    if code in _NOT_FOUND:
        return 404
    return 500


def content_type(fmt: str) -> str:
    """Content-Type of a result in ``fmt``, as ClickHouse's formats declare it."""
    name = fmt.lower()
    if name.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if name.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if name.startswith("json") or name.startswith("ndjson"):
        return "application/json; charset=UTF-8"
    if name in ("native", "arrow", "arrowstream", "parquet", "orc", "avro", "rowbinary", "msgpack") \
            or name.startswith("rowbinary"):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


# ------------------------------------------------------------------------- statements

_SKIP = re.compile(r"\s+|--[^\n]*(?:\n|$)|#[ !][^\n]*(?:\n|$)|/\*.*?\*/", re.S)
_TOKEN = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|`(?:[^`\\]|\\.|``)*`|[A-Za-z_][A-Za-z0-9_]*"
                    r"|[0-9][A-Za-z0-9_.]*|.", re.S)


class Incomplete(Exception):
    """The text ends inside a comment, a quoted literal, or before the data of an INSERT starts."""


def _tokens(text: str) -> Iterator[tuple[str, int, int]]:
    """(token, start, end) at parenthesis depth 0 and deeper, comments and whitespace skipped; raises
    Incomplete when the text ends inside a literal or comment."""
    pos, size = 0, len(text)
    while pos < size:
        skip = _SKIP.match(text, pos)
        if skip:
            pos = skip.end()
            continue
        if text.startswith("/*", pos):
            raise Incomplete
        match = _TOKEN.match(text, pos)
        assert match is not None  # '.' matches any character
        token = match.group()
        if token in ("'", '"', "`"):
            raise Incomplete
        yield token, match.start(), match.end()
        pos = match.end()


def first_keyword(text: str) -> str:
    """The statement's first word, upper-cased ('' for an empty text); opening parentheses skipped."""
    try:
        for token, _, _ in _tokens(text):
            if token != "(":
                return token.upper()
    except Incomplete:
        return ""
    return ""


@dataclass(frozen=True)
class InsertData:
    """``INSERT ... FORMAT <fmt>`` followed by data: the statement without its FORMAT clause and where
    the data starts."""

    statement: str
    fmt: str
    data_start: int


def split_insert(text: str, complete: bool) -> InsertData | None:
    """Where the data of ``INSERT ... FORMAT x`` begins, as ClickHouse's parser decides it (after the
    format name, spaces and tabs, then one line break); None for INSERT ... VALUES / SELECT / FROM INFILE,
    whose text is all SQL. Raises Incomplete if ``text`` may be cut before the data (``complete`` False)."""
    depth, previous = 0, ""
    tokens = _tokens(text)
    try:
        for token, start, end in tokens:
            upper = token.upper()
            if token == "(":
                depth += 1
            elif token == ")":
                depth -= 1
            elif depth == 0 and upper in ("VALUES", "SELECT", "WITH", "INFILE") and previous not in ("INTO", "TABLE"):
                return None
            elif depth == 0 and upper == "FORMAT" and previous not in ("INTO", "TABLE", "FUNCTION"):
                name, _, name_end = next(tokens)
                if name_end == len(text) and not complete:
                    raise Incomplete
                data = name_end
                while data < len(text) and text[data] in " \t\f":
                    data += 1
                if data < len(text) and text[data] == "\r":
                    data += 1
                if data < len(text) and text[data] == "\n":
                    data += 1
                if data == len(text) and not complete:
                    raise Incomplete
                return InsertData(text[:start].rstrip(), name, data)
            previous = upper
    except (Incomplete, StopIteration):
        if complete:
            return None
        raise Incomplete from None
    if not complete:
        raise Incomplete
    return None


def output_format(text: str) -> str | None:
    """The format named by the statement's own top-level ``FORMAT`` clause, if any."""
    depth, found, expect = 0, None, False
    try:
        for token, _, _ in _tokens(text):
            if expect:
                found, expect = token, False
            elif token == "(":
                depth += 1
            elif token == ")":
                depth -= 1
            elif depth == 0 and token.upper() == "FORMAT":
                expect = True
    except Incomplete:
        return found
    return found


# ------------------------------------------------------------------------- request bodies

def read_body(stream: BinaryIO, length: int | None, chunked: bool, piece: int = 1 << 20) -> Iterator[bytes]:
    """The request body as it arrives: ``Content-Length`` bytes, or a ``Transfer-Encoding: chunked`` body."""
    if chunked:
        while True:
            line = stream.readline(1024)
            if not line:
                raise EndpointError(STD_EXCEPTION, "Unexpected end of chunked request body")
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while stream.readline(1024) not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return
            left = size
            while left:
                data = stream.read(min(left, piece))
                if not data:
                    raise EndpointError(STD_EXCEPTION, "Unexpected end of chunked request body")
                left -= len(data)
                yield data
            stream.readline(16)  # CRLF after each chunk
        return
    left = length or 0
    while left > 0:
        data = stream.read(min(left, piece))
        if not data:
            raise EndpointError(STD_EXCEPTION, f"Unexpected end of request body ({left} bytes missing)")
        left -= len(data)
        yield data


def decompressed(pieces: Iterator[bytes], encoding: str | None) -> Iterator[bytes]:
    """``pieces`` decoded per ``Content-Encoding`` (lz4 frame, zstd, gzip, deflate, br), incrementally."""
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        yield from pieces
        return
    try:
        if encoding == "lz4":
            import lz4.frame

            decoder = lz4.frame.LZ4FrameDecompressor()
            for piece in pieces:
                while piece:
                    yield decoder.decompress(piece)
                    piece = decoder.unused_data
                    if decoder.eof:
                        decoder = lz4.frame.LZ4FrameDecompressor()
            return
        if encoding == "zstd":
            try:
                from compression import zstd  # type: ignore[import-not-found]  # Python 3.14
            except ImportError:
                from backports import zstd  # type: ignore[no-redef]
            zdecoder = zstd.ZstdDecompressor()
            for piece in pieces:
                while piece:
                    yield zdecoder.decompress(piece)
                    piece = zdecoder.unused_data if zdecoder.eof else b""
                    if zdecoder.eof:
                        zdecoder = zstd.ZstdDecompressor()
            return
        if encoding in ("gzip", "x-gzip", "deflate"):
            inflate = zlib.decompressobj(wbits=47 if encoding != "deflate" else 15)
            for piece in pieces:
                yield inflate.decompress(piece)
            yield inflate.flush()
            return
        if encoding == "br":
            import brotli  # type: ignore[import-not-found]

            brdecoder = brotli.Decompressor()
            for piece in pieces:
                yield brdecoder.process(piece)
            return
    except EndpointError:
        raise
    except ImportError as exc:
        raise EndpointError(NOT_IMPLEMENTED, f"Content-Encoding {encoding!r} is not available here ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any codec failure is the client's malformed body
        raise EndpointError(CANNOT_DECOMPRESS, f"Cannot decompress the request body ({encoding}): {exc}") from None
    raise EndpointError(NOT_IMPLEMENTED, f"Unknown HTTP compression method {encoding!r}")
