"""Run ClickHouse HTTP requests on one chDB data directory, one call at a time.

Every request gets its own chDB connection handle (per-handle ``USE``/``SET`` state, so URL settings never
leak into another request); an HTTP ``session_id`` keeps its handle, with the request's settings applied
by ``SET`` and restored afterwards, until it has been idle for ``session_timeout`` seconds. An
``INSERT ... FORMAT F`` followed by data is written to a temporary file and run as
``INSERT ... FROM INFILE ... SETTINGS ... FORMAT F``, so the settings (``insert_deduplication_token``)
reach the insert as on a server.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import chdb

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Quoted identifiers (`format`, "settings") are skipped when looking for the FORMAT and SETTINGS keywords.
_QUOTED = rb"(?:`[^`]*`|\"[^\"]*\"|'(?:[^'\\]|\\.)*'|[^`\"'])*?"
_INSERT_DATA = re.compile(rb"^\s*INSERT\s+INTO\s+(?P<head>" + _QUOTED + rb")\bFORMAT\s+(?P<fmt>\w+)[ \t]*(?:\r?\n)?",
                          re.IGNORECASE | re.DOTALL)
_NOT_DATA = re.compile(rb"\b(SELECT|VALUES|INFILE)\b", re.IGNORECASE)
_SETTINGS_CLAUSE = re.compile(rb"^(?P<target>" + _QUOTED + rb")\bSETTINGS\b", re.IGNORECASE | re.DOTALL)
_TRAILING_FORMAT = re.compile(rb"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_FIRST_WORD = re.compile(rb"^(?:\s|--[^\n]*\n|/\*.*?\*/|\()*(\w+)", re.DOTALL)
_RESULT_STATEMENTS = {b"select", b"with", b"show", b"desc", b"describe", b"exists", b"explain", b"check"}
_CODE = re.compile(r"Code: (\d+)")


class QueryError(Exception):
    """A failed statement: the ClickHouse error code and its ``Code: N. DB::Exception: ...`` text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Result:
    body: bytes
    format: str | None
    summary: dict[str, str] = field(default_factory=dict)


@dataclass
class _Session:
    handle: Any
    timeout: float
    used: float = field(default_factory=time.monotonic)


def quote(value: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_name(name: str) -> str:
    if not _SETTING_NAME.match(name):
        raise QueryError(115, f"Code: 115. DB::Exception: Setting {name!r} is not a valid name. (UNKNOWN_SETTING)")
    return name


def as_query_error(exc: Exception) -> QueryError:
    """chDB's error as ClickHouse reports it (``Code: N. DB::Exception: ...``)."""
    text = str(exc).strip()
    start = text.find("Code: ")
    text = text[start:] if start > 0 else text
    match = _CODE.match(text)
    if match:
        return QueryError(int(match.group(1)), text)
    return QueryError(1001, f"Code: 1001. DB::Exception: {text or type(exc).__name__}. (STD_EXCEPTION)")


class ChdbExecutor:
    """The owner of one chDB data directory; all engine calls run under one lock."""

    def __init__(self, path: str, spool: str | None = None) -> None:
        self.path = path
        self.spool = spool or tempfile.gettempdir()
        self.lock = threading.Lock()
        self.engine = chdb.connect(path)  # keeps the engine (and the directory lock) for the process
        self.sessions: dict[str, _Session] = {}
        self.version, self.timezone = self.engine.query("SELECT version(), timezone()", "TabSeparated") \
            .bytes().decode().strip().split("\t")

    def close(self) -> None:
        with self.lock:
            for session in self.sessions.values():
                session.handle.close()
            self.sessions.clear()
            self.engine.close()

    def execute(self, text: bytes, *, settings: dict[str, str], params: dict[str, str], database: str | None,
                default_format: str, session_id: str | None = None, session_timeout: float = 60.0) -> Result:
        """Run one request's statement (``text``: the URL query, a newline, then the body)."""
        insert = _INSERT_DATA.match(text[:65536])
        if insert and not _NOT_DATA.search(re.sub(rb"`[^`]*`|\"[^\"]*\"", b"", insert.group("head"))):
            return self._insert(insert.group("head"), insert.group("fmt").decode(), text[insert.end():],
                                settings, database, session_id, session_timeout)
        fmt = _TRAILING_FORMAT.search(text[-256:])
        word = _FIRST_WORD.match(text)
        produces = bool(fmt) or bool(word and word.group(1).lower() in _RESULT_STATEMENTS)
        out_format = fmt.group(1).decode() if fmt else default_format
        result = self._run(text, default_format, settings, params, database, session_id, session_timeout)
        return Result(result.bytes() or b"", out_format if produces else None, _summary(result))

    def _insert(self, head: bytes, fmt: str, data: bytes, settings: dict[str, str], database: str | None,
                session_id: str | None, session_timeout: float) -> Result:
        target, inline = head, b""
        clause = _SETTINGS_CLAUSE.match(head)
        if clause:
            target, inline = clause.group("target"), head[clause.end():]
        merged = ", ".join(f"{_check_name(k)} = {quote(v)}" for k, v in settings.items())
        merged = ", ".join(part for part in (merged, inline.decode().strip()) if part)
        fd, spool = tempfile.mkstemp(prefix="insert-", suffix=".data", dir=self.spool)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            sql = (f"INSERT INTO {target.decode().strip()} FROM INFILE {quote(spool)}"
                   f"{' SETTINGS ' + merged if merged else ''} FORMAT {fmt}")
            result = self._run(sql.encode(), "TabSeparated", {}, {}, database, session_id, session_timeout)
        finally:
            os.unlink(spool)
        return Result(b"", None, _summary(result, written=True))

    def _run(self, sql: bytes, fmt: str, settings: dict[str, str], params: dict[str, str], database: str | None,
             session_id: str | None, session_timeout: float) -> Any:
        with self.lock:
            self._expire()
            session = self.sessions.get(session_id) if session_id else None
            try:
                if session_id and session is None:
                    session = self.sessions[session_id] = _Session(chdb.connect(self.path), session_timeout)
                handle = session.handle if session else chdb.connect(self.path)
            except Exception as exc:  # noqa: BLE001 - reported to the client as a ClickHouse error
                raise as_query_error(exc) from None
            try:
                if database:
                    handle.query(f"USE `{database.replace('`', '``')}`", "TabSeparated")
                saved = self._snapshot(handle, settings) if session else {}
                try:
                    for name, value in settings.items():
                        handle.query(f"SET {_check_name(name)} = {quote(value)}", "TabSeparated")
                    return handle.query(sql.decode(errors="surrogateescape"), fmt, params=params)
                finally:
                    self._restore(handle, saved)
            except QueryError:
                raise
            except Exception as exc:  # noqa: BLE001 - every engine error goes back as ClickHouse reports it
                raise as_query_error(exc) from None
            finally:
                if session:
                    session.used, session.timeout = time.monotonic(), session_timeout
                else:
                    handle.close()

    @staticmethod
    def _snapshot(handle: Any, settings: dict[str, str]) -> dict[str, tuple[str, bool]]:
        if not settings:
            return {}
        names = ", ".join(quote(_check_name(k)) for k in settings)
        rows = handle.query(f"SELECT name, value, changed FROM system.settings WHERE name IN ({names})",
                            "JSONEachRow").bytes().splitlines()
        saved = {k: ("", False) for k in settings}
        saved.update({row["name"]: (row["value"], bool(row["changed"])) for row in map(json.loads, rows)})
        return saved

    @staticmethod
    def _restore(handle: Any, saved: dict[str, tuple[str, bool]]) -> None:
        for name, (value, changed) in saved.items():
            literal = value if value.startswith("'") and value.endswith("'") and len(value) > 1 else quote(value)
            try:
                handle.query(f"SET {name} = {literal if changed else 'DEFAULT'}", "TabSeparated")
            except Exception:  # noqa: BLE001, S110 - a setting that cannot be reset keeps its session value
                pass

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self.sessions.items() if now - s.used > s.timeout]:
            self.sessions.pop(key).handle.close()


def _summary(result: Any, written: bool = False) -> dict[str, str]:
    """The ``X-ClickHouse-Summary`` fields chDB can tell (an INFILE insert reads the rows it writes)."""
    try:
        rows, size, elapsed = result.rows_read(), result.bytes_read(), result.elapsed()
    except Exception:  # noqa: BLE001 - statistics are optional
        rows, size, elapsed = 0, 0, 0.0
    summary = {"read_rows": str(rows), "read_bytes": str(size), "written_rows": "0", "written_bytes": "0",
               "total_rows_to_read": str(rows), "elapsed_ns": str(int(elapsed * 1e9))}
    if written:
        summary.update(written_rows=str(rows), written_bytes=str(size))
    return summary
