"""Counters that foreachBatch writers update per batch (rows written, dead-lettered), read by the runner."""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
_counters: dict[str, Counter[str]] = {}


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
