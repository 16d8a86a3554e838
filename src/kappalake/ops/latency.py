"""End-to-end latency of a batch (event time to sink commit) from event-time quantiles.

A writer adds :func:`event_time_quantiles` to an aggregation it runs anyway, then, once the batch is
committed, turns the quantiles into latency figures with :func:`latency_after_commit`: latency
quantile q = commit time - event-time quantile (1 - q).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

#: 0.00, 0.05, ..., 1.00: the event-time distribution of a batch in 21 points.
POINTS = tuple(round(i * 0.05, 2) for i in range(21))


def event_time_quantiles(time_column: Column) -> Column:
    """Approximate quantiles (epoch microseconds) of ``time_column`` at :data:`POINTS`."""
    return F.percentile_approx(F.unix_micros(time_column), list(POINTS), 1000)


def latency_after_commit(quantiles: Sequence[int] | None, committed_at: float | None = None) -> dict[str, object]:
    """``{"p50", "p95", "max", "sample"}`` in seconds; empty when the batch had no events."""
    if not quantiles:
        return {}
    now = committed_at if committed_at is not None else time.time()
    by_point = dict(zip(POINTS, quantiles, strict=True))
    seconds = {q: max(0.0, now - micros / 1e6) for q, micros in by_point.items()}
    return {"p50": seconds[0.5], "p95": seconds[0.05], "max": seconds[0.0], "sample": sorted(seconds.values())}
