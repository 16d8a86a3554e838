"""Notice Kafka offsets a query skipped because they were gone (``failOnDataLoss=false``).

With ``failOnDataLoss=false`` Spark's Kafka source silently moves past records that retention or
DeleteRecords removed before it read them. Each finished micro-batch's progress names, per source,
the offsets it started from and ended at and how many rows it read. A batch that read fewer rows
than its offset span skipped some offsets; that alone is not loss (transaction markers and aborted
records of transactional topics occupy offsets too). The skipped offsets are lost when they lie
below the partition's log start offset (low watermark) on the broker: ``[start, min(low, end))``.
The count of one batch never exceeds its skipped offsets (span minus rows), so records that were
read and only later aged out are not reported as lost.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException

from kappalake.errors import KappalakeError
from kappalake.io.kafka.admin import end_offsets

log = logging.getLogger(__name__)

# topic -> {partition: log start offset}
LogStarts = Callable[[str], Mapping[int, int]]


@dataclass(frozen=True)
class OffsetGap:
    """Offsets ``first``..``last`` (inclusive) of a partition, skipped by a batch: Kafka no longer had them."""

    query: str
    batch_id: int
    topic: str
    partition: int
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


def broker_log_starts(bootstrap_servers: str, options: Mapping[str, str] | None = None) -> LogStarts:
    """Look up a topic's per-partition log start offsets (low watermarks) on the brokers."""

    def lookup(topic: str) -> dict[int, int]:
        return {partition: low for partition, (low, _high) in end_offsets(bootstrap_servers, topic, options).items()}

    return lookup


def batch_gaps(progress: Mapping[str, Any], log_starts: LogStarts) -> list[OffsetGap]:
    """Gaps of lost offsets in one micro-batch, from its progress (``StreamingQueryProgress`` JSON)."""
    name = progress.get("name") or "unnamed"
    batch_id = int(progress.get("batchId", -1))
    gaps: list[OffsetGap] = []
    for source in progress.get("sources") or ():
        start, end = _offsets(source.get("startOffset")), _offsets(source.get("endOffset"))
        if start is None or end is None:
            continue
        ranges = {tp: (start[tp], end[tp]) for tp in start.keys() & end.keys() if end[tp] > start[tp]}
        skipped = sum(e - s for s, e in ranges.values()) - int(source.get("numInputRows") or 0)
        if skipped <= 0:
            continue  # every offset of the batch was read
        lows: dict[str, Mapping[int, int]] = {}
        for (topic, partition), (first, until) in sorted(ranges.items()):
            if topic not in lows:
                lows[topic] = log_starts(topic)
            low = lows[topic].get(partition)
            if low is None or low <= first or skipped <= 0:
                continue
            count = min(min(low, until) - first, skipped)
            skipped -= count
            gaps.append(OffsetGap(name, batch_id, topic, partition, first, first + count - 1))
    return gaps


def _offsets(raw: Any) -> dict[tuple[str, int], int] | None:
    """``{"topic": {"0": 20}}`` (as object or JSON text) -> ``{("topic", 0): 20}``; None if not Kafka offsets."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if not isinstance(raw, dict):
        return None
    result: dict[tuple[str, int], int] = {}
    for topic, partitions in raw.items():
        if not isinstance(partitions, dict):
            return None
        for partition, offset in partitions.items():
            if not (isinstance(offset, int) and str(partition).lstrip("-").isdigit()):
                return None
            result[(topic, int(partition))] = offset
    return result


@dataclass
class DataLossMonitor:
    """Checks every finished batch of the observed queries for lost offsets; logs and counts each gap.

    Inactive (checks nothing) when ``enabled`` is false: with ``failOnDataLoss=true`` Spark fails the
    query instead of skipping.
    """

    log_starts: LogStarts
    enabled: bool = True
    gaps: list[OffsetGap] = field(default_factory=list)
    _seen: set[tuple[str, str, int]] = field(default_factory=set)

    @classmethod
    def for_source(cls, bootstrap_servers: str, source_options: Mapping[str, str],
                   client_options: Mapping[str, str] | None = None) -> DataLossMonitor:
        """A monitor for a Kafka source with Spark's ``source_options`` (active when failOnDataLoss is false)."""
        enabled = str(source_options.get("failOnDataLoss", "true")).strip().lower() == "false"
        return cls(broker_log_starts(bootstrap_servers, client_options), enabled=enabled)

    def fold(self, progress: Mapping[str, Any]) -> list[OffsetGap]:
        """Check one batch unless already checked; return (and log) its gaps."""
        key = (str(progress.get("name")), str(progress.get("runId")), int(progress.get("batchId", -1)))
        if not self.enabled or key in self._seen:
            return []
        try:
            gaps = batch_gaps(progress, self.log_starts)
        except (KappalakeError, KafkaException) as exc:  # the broker did not answer: check again next time
            log.warning("could not check batch %s of query %s for data loss: %s", key[2], key[0], exc)
            return []
        self._seen.add(key)
        for gap in gaps:
            log.warning("data loss: query %s batch %d skipped %s partition %d offsets %d-%d (%d records): they were "
                        "no longer in Kafka (retention or DeleteRecords) when the batch read the partition "
                        "(failOnDataLoss=false)", gap.query, gap.batch_id, gap.topic, gap.partition, gap.first,
                        gap.last, gap.count)
        self.gaps.extend(gaps)
        return gaps

    def observe(self, queries: Iterable[Any]) -> None:
        """Check the batches of each query's recent progress not checked yet."""
        if not self.enabled:
            return
        for query in queries:
            for jprogress in query._jsq.recentProgress():
                self.fold(json.loads(jprogress.json()))

    def lost_offsets(self, query: str | None = None) -> int:
        """Offsets lost so far, by the query named ``query`` or by all."""
        return sum(g.count for g in self.gaps if query is None or g.query == query)
