"""A gold view's windows in ClickHouse: read the stored states a batch touches, merge, write.

Per micro-batch and view, three calls: read the state rows of the windows the batch touches (``FINAL``),
merge the batch's partial states into them (:mod:`kappalake.transforms.window_merge`), then write the
finalized rows to the public table and the merged states to the state table, in that order. The state
table is the source of truth for merging: a crash after the public write and before the state write
replays the batch against the old states and writes the same values again; a crash after both finds the
batch applied (its ``_generation``/``_batch``) and skips it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kappalake.io.clickhouse.client import ClickHouse
from kappalake.io.clickhouse.schema import GoldTable
from kappalake.io.clickhouse.sink import GoldSink, RetryPolicy, with_retries
from kappalake.transforms.window_merge import DELETED, finalize, merge_sessions, merge_windows

if TYPE_CHECKING:
    import pyarrow as pa

    from kappalake.config.models import GoldViewConfig

log = logging.getLogger(__name__)

class WindowStore:
    """One gold view's public and state tables, written per micro-batch."""

    def __init__(self, ch: ClickHouse, view: GoldViewConfig, public: GoldTable, state: GoldTable,
                 public_schema: pa.Schema, retry: RetryPolicy | None = None, chunk_rows: int = 100_000) -> None:
        self.ch = ch
        self.view = view
        self.public = public
        self.state = state
        self.public_schema = public_schema
        self.retry = retry or RetryPolicy()
        self.public_sink = GoldSink(ch, public, chunk_rows=chunk_rows, retry=self.retry)
        self.state_sink = GoldSink(ch, state, chunk_rows=chunk_rows, retry=self.retry)
        self.sessions = view.window.kind == "session"

    def bind(self, query_id: str) -> None:
        self.public_sink.bind(query_id)
        self.state_sink.bind(query_id)

    def stored(self, partials: pa.Table) -> pa.Table:
        """The live state rows of the windows (sessions: the key's sessions in range) ``partials`` touches."""
        import pyarrow.compute as pc

        columns = ", ".join(f"`{name}`" for name, _ in self.state.columns if name != "version")
        if self.sessions:
            low, high = pc.min(partials["window_start"]).as_py(), pc.max(partials["window_end"]).as_py()
            where = (f"window_end >= {_literal(low)} AND window_start <= {_literal(high)}")
        else:
            starts = sorted(set(pc.unique(partials["window_start"]).to_pylist()))
            where = f"window_start IN ({', '.join(_literal(s) for s in starts)})"
        sql = f"SELECT {columns} FROM `{self.state.name}` FINAL WHERE {where}"
        return self._retry("read of", lambda: self.ch.query_arrow(sql))

    def write(self, partials: pa.Table, batch_id: int, generation: int,
              prepare: Callable[[pa.Table], pa.Table] | None = None) -> int:
        """Merge one batch into the view; ``prepare`` may filter or check the public rows before the write.
        Returns the public rows written."""
        import pyarrow.compute as pc

        if partials.num_rows == 0:
            return 0
        began = time.perf_counter()
        stored = self.stored(partials)
        read = time.perf_counter()
        merge = merge_sessions if self.sessions else merge_windows
        states = merge(partials, stored, self.view, generation, batch_id)
        merged = time.perf_counter()
        if states.num_rows == 0:
            log.info("gold table %s: batch %d was applied before; nothing to write", self.public.name, batch_id)
            return 0
        deleted = pc.equal(states[DELETED], 1)
        public = finalize(states.filter(pc.invert(deleted)), self.view, self.public_schema)
        if prepare is not None:
            public = prepare(public)
        if self.sessions:
            public = _with_deletions(public, finalize(states.filter(deleted), self.view, self.public_schema))
        written = self.public_sink.write(public, batch_id)
        self.state_sink.write(states, batch_id)
        log.debug("%s batch %d: %d windows (%d stored read) read %.0f ms, merge %.0f ms, finalize+write %.0f ms",
                  self.public.name, batch_id, states.num_rows, stored.num_rows, (read - began) * 1000,
                  (merged - read) * 1000, (time.perf_counter() - merged) * 1000)
        return written

    def _retry(self, what: str, call: Callable[[], Any]) -> Any:
        return with_retries(self.retry, what, self.state.name, self.ch.dsn, call)


def _with_deletions(live: pa.Table, gone: pa.Table) -> pa.Table:
    import pyarrow as pa

    live = live.append_column(DELETED, pa.array([0] * live.num_rows, pa.uint8()))
    gone = gone.append_column(DELETED, pa.array([1] * gone.num_rows, pa.uint8()))
    return pa.concat_tables([live, gone.select(live.column_names).cast(live.schema)])


def _literal(value: Any) -> str:
    """A DateTime64(6, 'UTC') literal for a Python datetime."""
    from datetime import timezone

    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return f"toDateTime64('{value.isoformat(sep=' ', timespec='microseconds')}', 6, 'UTC')"
