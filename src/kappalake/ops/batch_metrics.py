"""Counters that foreachBatch writers update per batch (rows written, dead-lettered), read by the runner,
and each batch's end-to-end latency, kept by batch id: progress records are read a moment after their
batch ends, when a later batch (a stateful query's no-data batch, say) may already have run."""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
_counters: dict[str, Counter[str]] = {}
_latency: dict[str, dict[int, dict[str, object]]] = {}
#: Batches whose latency is kept per query (the runner reads progress every second or so).
KEEP_BATCHES = 64


def add(query_name: str, **counts: int) -> None:
    """Add ``counts`` to the counters of ``query_name``."""
    with _lock:
        _counters.setdefault(query_name, Counter()).update(counts)


def snapshot(query_name: str) -> dict[str, int]:
    with _lock:
        return dict(_counters.get(query_name, Counter()))


def reset(query_name: str) -> None:
    """Forget the counters and latencies of ``query_name`` (a new run starts)."""
    with _lock:
        _counters.pop(query_name, None)
        _latency.pop(query_name, None)


def set_latency(query_name: str, batch_id: int, **quantiles: object) -> None:
    """Batch ``batch_id``'s end-to-end latency quantiles (seconds) of ``query_name``: p50, p95, max, ...
    (none for a batch without events)."""
    with _lock:
        batches = _latency.setdefault(query_name, {})
        batches[batch_id] = dict(quantiles)
        while len(batches) > KEEP_BATCHES:
            batches.pop(min(batches))


def latency(query_name: str, batch_id: int) -> dict[str, object]:
    """The latency quantiles recorded for batch ``batch_id`` of ``query_name`` (empty when none)."""
    with _lock:
        return dict(_latency.get(query_name, {}).get(batch_id, {}))
