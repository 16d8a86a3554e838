"""Clean stops: SIGINT/SIGTERM end a run after the current micro-batch; a second signal ends it at once.

The first signal only records a request (:class:`StopRequest`); the runner's wait loop sees it, lets every
query finish the batch it is running (:func:`stop_after_current_batch`) and stops it, so the batch's sink
commit and its checkpoint commit both land and a restart starts with the next batch. A second signal, or
``KAPPALAKE_STOP_TIMEOUT`` seconds (default 120) without the batch ending, stops the queries at once: the
interrupted batch is replayed on restart, which every sink makes harmless (see *Exactly-once*).

The Spark JVM ignores SIGINT (PySpark starts it so), so Ctrl-C reaches only this process.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from kappalake.errors import KappalakeError

if TYPE_CHECKING:
    from pyspark.sql.streaming import StreamingQuery

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_STOP_TIMEOUT = 120.0


class JobStopped(KappalakeError):
    """The run was stopped by a signal and closed cleanly; the exit code is 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequest:
    """Records SIGINT/SIGTERM while installed (main thread only; elsewhere it records nothing)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self._saved: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def immediate(self) -> bool:
        """A second signal arrived: do not wait for the current batch."""
        return self.count >= 2

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "-"

    def __enter__(self) -> StopRequest:
        self.arm()
        return self

    def arm(self) -> None:
        """Install the handlers (again): creating a SparkContext replaces the SIGINT handler with PySpark's,
        which cancels every job and raises KeyboardInterrupt inside a py4j call. The handlers found are put
        back on exit."""
        if threading.current_thread() is not threading.main_thread():
            return
        global _ARMED
        _ARMED = self
        for signum in SIGNALS:
            previous = signal.signal(signum, self._handle)
            if previous != self._handle:
                self._saved[signum] = previous

    def __exit__(self, *_: object) -> None:
        global _ARMED
        if _ARMED is self:
            _ARMED = None
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum


_ARMED: StopRequest | None = None


def stop_requested() -> bool:
    """A SIGINT/SIGTERM arrived for the running job (for code that waits inside a batch, e.g. on a registry)."""
    return _ARMED is not None and _ARMED.requested


def stop_timeout() -> float:
    """Seconds a stop waits for the running batches (``KAPPALAKE_STOP_TIMEOUT``)."""
    raw = os.environ.get("KAPPALAKE_STOP_TIMEOUT", "")
    try:
        return float(raw) if raw else DEFAULT_STOP_TIMEOUT
    except ValueError:
        raise KappalakeError(f"KAPPALAKE_STOP_TIMEOUT={raw!r} is not a number of seconds") from None


def stop_after_current_batch(queries: Sequence[StreamingQuery], request: StopRequest,
                             timeout: float | None = None) -> None:
    """Stop every active query once it is between batches (or at once on a second signal or after
    ``timeout``)."""
    deadline = time.monotonic() + (stop_timeout() if timeout is None else timeout)
    pending = [q for q in queries if q.isActive]
    while pending:
        for query in list(pending):
            if not _trigger_active(query) or request.immediate or time.monotonic() > deadline:
                query.stop()
                pending.remove(query)
        if pending:
            time.sleep(0.05)


def _trigger_active(query: StreamingQuery) -> bool:
    try:
        return bool(query.status.get("isTriggerActive"))
    except Exception:  # noqa: BLE001 - a query that just terminated has no status to ask
        return False
