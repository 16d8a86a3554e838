"""Fold Spark's per-batch query progress into running totals per query.

Progress is read from ``StreamingQuery.recentProgress`` on the driver (no Python callback server
involved); batches already seen are skipped by batch id, so polling often is harmless.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class QueryTotals:
    name: str
    batches: int = 0
    input_rows: int = 0
    last_batch_id: int | None = None
    last_batch_time: str | None = None
    last_rows_per_second: float = 0.0


@dataclass
class ProgressTracker:
    """Totals per query name across the batches observed so far."""

    totals: dict[str, QueryTotals] = field(default_factory=dict)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    max_history: int = 1000
    #: Called with every progress record the first time it is folded (metrics, status).
    on_new: Callable[[dict[str, Any]], None] | None = None
    _seen: dict[str, set[tuple[str, int]]] = field(default_factory=dict)

    def fold(self, progress: dict[str, Any]) -> None:
        """Add one progress record (as ``StreamingQueryProgress`` JSON) unless already counted."""
        name = progress.get("name") or "unnamed"
        batch = (str(progress.get("runId")), int(progress["batchId"]))
        seen = self._seen.setdefault(name, set())
        if batch in seen:
            return
        seen.add(batch)
        history = self.history.setdefault(name, [])
        history.append(progress)
        del history[:-self.max_history]
        totals = self.totals.setdefault(name, QueryTotals(name))
        totals.batches += 1
        totals.input_rows += int(progress.get("numInputRows") or 0)
        if totals.last_batch_id is None or batch[1] >= totals.last_batch_id:
            totals.last_batch_id = batch[1]
            totals.last_batch_time = progress.get("timestamp")
            totals.last_rows_per_second = float(progress.get("processedRowsPerSecond") or 0.0)
        if self.on_new is not None:
            self.on_new(progress)

    def observe(self, queries: list[Any]) -> None:
        """Fold the recent progress of each query."""
        for query in queries:
            for jprogress in query._jsq.recentProgress():  # JSON straight from the JVM: two py4j calls each
                self.fold(json.loads(jprogress.json()))
