"""Counters that foreachBatch writers update per batch (rows written, dead-lettered), read by the runner."""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
_counters: dict[str, Counter[str]] = {}
_latency: dict[str, dict[str, object]] = {}


def add(query_name: str, **counts: int) -> None:
    """Add ``counts`` to the counters of ``query_name``."""
    with _lock:
        _counters.setdefault(query_name, Counter()).update(counts)


def snapshot(query_name: str) -> dict[str, int]:
    with _lock:
        return dict(_counters.get(query_name, Counter()))


def reset(query_name: str) -> None:
    with _lock:
        _counters.pop(query_name, None)


def set_latency(query_name: str, **quantiles: object) -> None:
    """The last batch's end-to-end latency quantiles (seconds) of ``query_name``: p50, p95, max, ..."""
    with _lock:
        _latency[query_name] = dict(quantiles)


def latency(query_name: str) -> dict[str, object]:
    with _lock:
        return dict(_latency.get(query_name, {}))
