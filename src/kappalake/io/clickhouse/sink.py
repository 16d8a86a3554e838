"""The gold table writer: one batch's rows into a ClickHouse table, exactly once.

Rows are sorted by (group keys, window_start), cut into chunks and inserted as Arrow with
``insert_deduplication_token = <table>:<query id>:<batch id>:<digest of the chunk's keys>`` (the query
id is stable for a checkpoint), so a replayed batch inserts nothing twice, and a replay that writes a
different set of windows (some were applied before the crash) never has a new chunk mistaken for an old
one. Every row carries ``version``: microseconds since
the epoch when the batch was written, strictly increasing in the process and never below the table's
highest version, so later writes (a restart, a backfill) supersede older rows in the ReplacingMergeTree.
Transient errors retry with exponential backoff; after the last attempt the query fails and the batch is
replayed from the checkpoint on restart: no batch is skipped.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kappalake.errors import ClickHouseUnavailable
from kappalake.io.clickhouse.client import ClickHouse, redact
from kappalake.io.clickhouse.schema import GoldTable
from kappalake.runtime.binding import QueryBinding

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

# Server error codes worth retrying: timeouts, network, memory, too many parts/queries, read-only replica.
TRANSIENT_CODES = {3, 159, 202, 209, 210, 236, 241, 242, 252, 285, 319, 425, 999}
_CODE = re.compile(r"Code: (\d+)")


def is_transient(exc: BaseException) -> bool:
    """True for connection failures and the server error codes that a retry can cure."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(exc, (OperationalError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, DatabaseError):
        code = getattr(exc, "code", None)
        if code is None:
            match = _CODE.search(str(exc))
            code = int(match.group(1)) if match else None
        return code in TRANSIENT_CODES
    return False


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    first_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, attempt: int) -> float:
        """Backoff before retry ``attempt`` (1-based), with jitter."""
        return min(self.max_delay, self.first_delay * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)


class VersionClock:
    """Strictly increasing versions: microseconds since the epoch, never below a seen value."""

    def __init__(self, floor: int = 0, now: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self._last = floor
        self._now = now
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._now(), self._last + 1)
            return self._last


def with_retries(policy: RetryPolicy, what: str, table: str, dsn: str, call: Callable[[], Any]) -> Any:
    """``call()``; a transient failure is retried per ``policy`` (logged), then, like any other failure,
    raised as ClickHouseUnavailable naming ``what``, the table and the redacted DSN."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - classified below
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            if not is_transient(exc):
                raise ClickHouseUnavailable(
                    f"{what} ClickHouse table `{table}` ({redact(dsn)}) failed: {first}") from exc
            if attempt == policy.attempts:
                raise ClickHouseUnavailable(
                    f"{what} ClickHouse table `{table}` ({redact(dsn)}) failed {attempt} times, last: {first}; "
                    "the query stops and the batch is replayed from the checkpoint on restart") from exc
            pause = policy.delay(attempt)
            log.warning("ClickHouse %s %s failed (attempt %d/%d, retrying in %.1fs): %s", what, table, attempt,
                        policy.attempts, pause, first[:200])
            time.sleep(pause)
    raise AssertionError("unreachable")


class GoldSink(QueryBinding):
    """The ``foreachBatch`` function of one gold view's query."""

    def __init__(self, ch: ClickHouse, table: GoldTable, chunk_rows: int = 100_000,
                 retry: RetryPolicy | None = None, on_written: Callable[[int, int], None] | None = None) -> None:
        super().__init__()
        self.ch = ch
        self.table = table
        self.chunk_rows = chunk_rows
        self.retry = retry or RetryPolicy()
        self.on_written = on_written
        floor = ch.rows(f"SELECT max(version) FROM `{table.name}`")[0][0] or 0
        self.clock = VersionClock(int(floor))

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        rows = self.write(batch.toArrow(), batch_id)
        if self.on_written is not None:
            self.on_written(batch_id, rows)

    def write(self, data: pa.Table, batch_id: int) -> int:
        """Insert one batch's rows (Arrow) in deterministic chunks; return the row count."""
        import pyarrow as pa

        if data.num_rows == 0:
            return 0
        data = data.sort_by([(k, "ascending") for k in self.table.sorting_key])
        version = self.clock.next()
        data = data.append_column("version", pa.array([version] * data.num_rows, pa.uint64()))
        if "updated_at" in dict(self.table.columns):
            now = datetime.now(timezone.utc)
            data = data.append_column("updated_at", pa.array([now] * data.num_rows, pa.timestamp("ms", tz="UTC")))
        for start in range(0, data.num_rows, self.chunk_rows):
            chunk = data.slice(start, self.chunk_rows)
            self._insert(chunk, f"{self.table.name}:{self.query_id}:{batch_id}:{self._digest(chunk)}")
        return int(data.num_rows)

    def _digest(self, chunk: pa.Table) -> str:
        """A digest of the chunk's sorting keys (and deletions): the same windows give the same token."""
        digest = hashlib.sha256()
        for name in (*self.table.sorting_key, *(("_deleted",) if "_deleted" in chunk.column_names else ())):
            digest.update("\x1f".join(map(str, chunk[name].to_pylist())).encode())
            digest.update(b"\x1e")
        return digest.hexdigest()[:24]

    def _insert(self, data: Any, token: str) -> None:
        settings = {"insert_deduplication_token": token, "insert_deduplicate": 1}
        with_retries(self.retry, "insert into", self.table.name, self.ch.dsn,
                     lambda: self.ch.insert_arrow(self.table.name, data, settings=settings))
