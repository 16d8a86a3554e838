"""The streaming query id, for ``foreachBatch`` functions that name their writes after it."""

from __future__ import annotations

import threading

from kappalake.errors import KappalakeError


class QueryBinding:
    """Holds the id of the query a ``foreachBatch`` function runs in; ``start()`` returns the query only
    after the first batch may have begun, so batches wait for :meth:`bind`."""

    def __init__(self) -> None:
        self._query_id: str | None = None
        self._bound = threading.Event()

    def bind(self, query_id: str) -> None:
        """Called right after ``start()`` with ``str(query.id)`` (stable for a checkpoint)."""
        self._query_id = query_id
        self._bound.set()

    @property
    def query_id(self) -> str:
        if not self._bound.wait(timeout=120) or self._query_id is None:
            raise KappalakeError(f"{type(self).__name__}: a batch started but the query id never arrived")
        return self._query_id
