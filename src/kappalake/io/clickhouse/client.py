"""One clickhouse-connect client per DSN and process, its calls serialised.

``local-stack`` is the local stack's ClickHouse HTTP endpoint (``kappalake stack up``; its password, if
any, from ``KAPPALAKE_CLICKHOUSE_PASSWORD``); ``chdb:///abs/path`` is clickhouse-connect's in-process
chDB backend (the real ClickHouse engine on a local directory; one process per directory); any other
DSN (``https://user:pass@host:8443/db``) reaches a server. Credentials belong in the DSN from the
environment (``CLICKHOUSE_DSN``), never in YAML.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from kappalake.errors import ClickHouseUnavailable

LOCAL_STACK = "local-stack"

_lock = threading.Lock()
_clients: dict[str, ClickHouse] = {}


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)


class ClickHouse:
    """A clickhouse-connect client whose calls run one at a time (chDB sessions are not thread-safe)."""

    def __init__(self, client: Any, dsn: str) -> None:
        self.client = client
        self.dsn = dsn
        self.lock = threading.RLock()

    @property
    def is_chdb(self) -> bool:
        return self.dsn.startswith("chdb:")

    def command(self, sql: str, parameters: dict[str, Any] | None = None,
                settings: dict[str, Any] | None = None) -> Any:
        with self.lock:
            return self.client.command(sql, parameters=parameters, settings=settings)

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self.lock:
            return list(self.client.query(sql, parameters=parameters).result_rows)

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self.lock:
            return self.client.query_arrow(sql, parameters=parameters)

    def insert_arrow(self, table: str, data: Any, settings: dict[str, Any] | None = None) -> Any:
        with self.lock:
            return self.client.insert_arrow(table, data, settings=settings)


def resolve(dsn: str) -> str:
    """``local-stack`` -> the local endpoint's ``http://`` DSN (StackError with the fix when it is down)."""
    if dsn != LOCAL_STACK:
        return dsn
    import os
    from urllib.parse import quote

    from kappalake.runtime.paths import HomeLayout
    from kappalake.runtime.stack.clickhouse import ClickHouseEndpoint

    url = ClickHouseEndpoint(HomeLayout.from_env()).dsn()
    password = os.environ.get("KAPPALAKE_CLICKHOUSE_PASSWORD")
    return url.replace("http://", f"http://default:{quote(password, safe='')}@") if password else url


def connect(dsn: str) -> ClickHouse:
    """The process's client for ``dsn`` (created on first use); clear errors when it cannot be reached."""
    dsn = resolve(dsn)
    with _lock:
        if dsn in _clients:
            return _clients[dsn]
        import clickhouse_connect

        if dsn.startswith("chdb:"):
            path = dsn.removeprefix("chdb://")
            if path and not path.startswith("/"):
                raise ClickHouseUnavailable(f"chDB DSN {dsn!r} must name an absolute directory (chdb:///abs/path)")
            if path:
                Path(path).mkdir(parents=True, exist_ok=True)
        try:
            client = clickhouse_connect.get_client(dsn=dsn)
        except Exception as exc:  # noqa: BLE001 - every driver failure becomes one clear message
            raise ClickHouseUnavailable(_explain(dsn, exc)) from None
        _clients[dsn] = ClickHouse(client, dsn)
        return _clients[dsn]


def _explain(dsn: str, exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    if "already initialized with path" in str(exc):
        return (f"cannot open {redact(dsn)}: this process already uses another chDB directory (chDB allows one "
                "directory per process)")
    if "Cannot lock file" in str(exc) or "status" in str(exc) and dsn.startswith("chdb:"):
        return (f"the chDB directory of {redact(dsn)} is in use by another process (chDB allows one process per "
                "directory): stop the running gold job or run this from the process that owns it")
    return f"cannot reach ClickHouse at {redact(dsn)}: {text}; check CLICKHOUSE_DSN"
