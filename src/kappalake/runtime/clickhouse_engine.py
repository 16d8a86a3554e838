"""The chDB engine behind the local ClickHouse endpoint: one data directory, one handle per session.

chDB hosts one engine per process; any number of ``chdb.connect`` handles share it, and calls on different
handles run concurrently (each handle is used by one thread at a time). A handle keeps its session state
(``SET``, ``USE``, temporary tables), so an HTTP ``session_id`` gets its own handle, expired after
``session_timeout`` idle seconds as on a server; requests without one borrow a pooled handle.

Per-query settings from the URL must not stick to the session (ClickHouse applies them to the query's
context only). They are applied with ``SET`` before the statement and undone lazily: a handle remembers which
values it overrides and the session's own values under them, so a client that sends the same settings on every
request (clickhouse-connect does) costs no extra statements after its first.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kappalake.runtime.clickhouse_wire import (
    INVALID_SESSION_TIMEOUT,
    SESSION_IS_LOCKED,
    SESSION_NOT_FOUND,
    TOO_MANY_SIMULTANEOUS_QUERIES,
    EndpointError,
)

MAX_SESSION_TIMEOUT = 3600
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass
class Outcome:
    """A statement's result: its bytes (kept alive by ``result``) and the summary ClickHouse reports."""

    body: Any
    summary: dict[str, str]
    result: Any = None


class Handle:
    """One chDB connection and the per-query overrides currently applied to it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.applied: dict[str, str] = {}  # setting -> value set for the current query
        self.saved: dict[str, tuple[str, bool]] = {}  # setting -> (session value, changed) under the override
        self.database: tuple[str, str] | None = None  # (applied database, session database under it)
        self.last_used = time.monotonic()
        self.timeout = 60.0

    # ---------------------------------------------------------------- per-query context
    def _query(self, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None) -> Any:
        try:
            return self.conn.query(sql, fmt, params=params or {})
        except Exception as exc:  # noqa: BLE001 - chDB raises its ClickHouse errors as text
            raise EndpointError.from_engine(exc) from None

    def _restore_statement(self, names: Iterable[str]) -> str:
        parts = []
        for name in names:
            value, changed = self.saved.pop(name, ("", False))
            literal = value if len(value) >= 2 and value[0] == value[-1] == "'" else _quote(value)
            parts.append(f"{name} = {literal}" if changed else f"{name} = DEFAULT")
            self.applied.pop(name, None)
        return ", ".join(parts)

    def prepare(self, settings: dict[str, str], database: str | None) -> None:
        """Make the handle's context the one this query asks for (settings, current database)."""
        for name in settings:
            if not _NAME.match(name):
                raise EndpointError(115, f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)")
        stale = [name for name in self.applied if name not in settings]
        if stale:
            self._query(f"SET {self._restore_statement(stale)}")
        wanted = {k: v for k, v in settings.items() if self.applied.get(k) != v}
        fresh = [name for name in wanted if name not in self.saved]
        if fresh:
            names = ", ".join(_quote(n) for n in fresh)
            rows = self._query(f"SELECT name, value, changed FROM system.settings WHERE name IN ({names})",
                               "JSONEachRow").bytes()
            current = {row["name"]: (row["value"], bool(row["changed"]))
                       for row in map(json.loads, rows.splitlines())}
            for name in fresh:
                self.saved[name] = current.get(name, ("", False))
        if wanted:
            try:
                self._query("SET " + ", ".join(f"{k} = {_quote(v)}" for k, v in wanted.items()))
            except EndpointError:
                for name in wanted:
                    if name not in self.applied:
                        self.saved.pop(name, None)
                raise
            self.applied.update(wanted)
        self._use(database)

    def _use(self, database: str | None) -> None:
        applied, session = self.database if self.database else (None, None)
        if database == applied:
            return
        if database is None:
            self._query(f"USE {_identifier(session or 'default')}")
            self.database = None
            return
        if session is None:
            session = self._query("SELECT currentDatabase()").bytes().decode().strip()
        self._query(f"USE {_identifier(database)}")
        self.database = (database, session)

    def reset(self) -> None:
        """Undo every override (before a statement that changes the session itself: SET, USE)."""
        if self.applied:
            self._query(f"SET {self._restore_statement(list(self.applied))}")
        self._use(None)

    # ---------------------------------------------------------------- statements
    def run(self, sql: str, fmt: str, params: dict[str, str]) -> Outcome:
        result = self._query(sql, fmt, params)
        view = result.get_memview().view() if result.size() else b""
        return Outcome(view, {"read_rows": str(result.rows_read()), "read_bytes": str(result.bytes_read()),
                              "written_rows": str(result.rows_written()),
                              "written_bytes": str(result.bytes_written()),
                              "result_rows": "0", "result_bytes": str(result.size()),
                              "elapsed_ns": str(int(result.elapsed() * 1e9))}, result)

    def insert(self, statement: str, fmt: str, data: Iterator[bytes]) -> Outcome:
        """``statement`` (INSERT without its FORMAT clause) fed with ``data`` in ``fmt`` as it arrives."""
        started = time.perf_counter()
        try:
            inserter = self.conn.send_insert(statement, fmt)
        except Exception as exc:  # noqa: BLE001
            raise EndpointError.from_engine(exc) from None
        try:
            for piece in data:
                if piece:
                    inserter.append(piece)
            done = inserter.finish()
        except EndpointError:
            inserter.cancel()
            raise
        except Exception as exc:  # noqa: BLE001
            inserter.cancel()
            raise EndpointError.from_engine(exc) from None
        return Outcome(b"", {"read_rows": "0", "read_bytes": "0", "written_rows": str(done.rows_written),
                             "written_bytes": str(done.bytes_written), "result_rows": str(done.rows_written),
                             "result_bytes": str(done.bytes_written),
                             "elapsed_ns": str(int((time.perf_counter() - started) * 1e9))})

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing at shutdown
            pass


@dataclass
class Engine:
    """The chDB data directory of this process, its sessions and a pool of handles for the rest."""

    path: str
    max_concurrent: int = 8
    pool_size: int = 4
    _sessions: dict[str, Handle] = field(default_factory=dict)
    _pool: list[Handle] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _slots: threading.BoundedSemaphore | None = None
    _main: Any = None

    def open(self) -> None:
        """Open the directory (fails if another process holds it) and learn the server's facts."""
        import chdb

        self._main = chdb.connect(self.path)
        self._slots = threading.BoundedSemaphore(self.max_concurrent)
        version, tz = self._main.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().split()
        self.version, self.timezone = version, tz

    def _new_handle(self) -> Handle:
        import chdb

        return Handle(chdb.connect(self.path))

    def _expire(self, now: float) -> None:
        for sid, handle in list(self._sessions.items()):
            if now - handle.last_used > handle.timeout and not handle.lock.locked():
                del self._sessions[sid]
                handle.close()

    @contextmanager
    def handle(self, session_id: str | None, timeout: str | None = None, check: bool = False) -> Iterator[Handle]:
        """The session's handle (created unless ``check``), or a pooled one; held for one request."""
        seconds = 60.0
        if timeout is not None:
            try:
                seconds = float(int(timeout))
            except ValueError:
                raise EndpointError(INVALID_SESSION_TIMEOUT, f"Invalid session timeout: '{timeout}'") from None
            if not 0 <= seconds <= MAX_SESSION_TIMEOUT:
                raise EndpointError(INVALID_SESSION_TIMEOUT, f"Session timeout '{timeout}' is larger than "
                                    f"max_session_timeout: {MAX_SESSION_TIMEOUT}")
        assert self._slots is not None, "Engine.open() first"
        if not self._slots.acquire(timeout=300):
            raise EndpointError(TOO_MANY_SIMULTANEOUS_QUERIES, "Too many simultaneous queries")
        try:
            with self._lock:
                now = time.monotonic()
                self._expire(now)
                if session_id:
                    handle = self._sessions.get(session_id)
                    if handle is None:
                        if check:
                            raise EndpointError(SESSION_NOT_FOUND, f"Session {session_id} not found")
                        handle = self._sessions[session_id] = self._new_handle()
                    if not handle.lock.acquire(blocking=False):
                        raise EndpointError(SESSION_IS_LOCKED, f"Session {session_id} is locked by a concurrent "
                                            "client")
                    handle.timeout = seconds
                else:
                    handle = self._pool.pop() if self._pool else self._new_handle()
                    handle.lock.acquire()
            try:
                yield handle
            finally:
                handle.last_used = time.monotonic()
                handle.lock.release()
                if not session_id:
                    self._give_back(handle)
        finally:
            self._slots.release()

    def _give_back(self, handle: Handle) -> None:
        with self._lock:
            if len(self._pool) < self.pool_size:
                self._pool.append(handle)
                return
        handle.close()

    def discard(self, handle: Handle) -> None:
        """Forget a pooled handle whose session state a statement changed (SET/USE without a session)."""
        with self._lock:
            if handle in self._pool:
                self._pool.remove(handle)
                handle.close()

    def close(self) -> None:
        """Close every handle, then the directory itself."""
        with self._lock:
            handles = [*self._sessions.values(), *self._pool]
            self._sessions.clear()
            self._pool.clear()
        for handle in handles:
            handle.close()
        if self._main is not None:
            self._main.close()
            self._main = None
