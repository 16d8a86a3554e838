"""Offset ranges per partition from timestamps, explicit offsets or the log start, checked against the
broker (what retention deleted, what does not exist yet)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from confluent_kafka import Consumer, TopicPartition

from kappalake.errors import ConfigError, KappalakeError
from kappalake.io.kafka.admin import end_offsets
from kappalake.io.kafka.client import librdkafka_config

Offsets = dict[str, dict[int, int]]


@dataclass(frozen=True)
class OffsetRange:
    topic: str
    partition: int
    start: int  # first offset read
    end: int  # exclusive

    @property
    def records(self) -> int:
        return max(0, self.end - self.start)


def parse_offsets(text: str, what: str) -> Offsets:
    """``{"topic": {"0": 12, "1": 40}}`` -> ``{"topic": {0: 12, 1: 40}}``, with a clear error."""
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or not raw:
            raise ValueError("expected a JSON object of topics")
        return {str(t): {int(p): int(o) for p, o in parts.items()} for t, parts in raw.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{what} {text!r} is not valid: {exc}; expected JSON like "
                          '\'{"payments": {"0": 100, "1": 250}}\'') from None


def parse_timestamp(text: str, what: str) -> datetime:
    """An ISO-8601 timestamp (UTC when it names no zone)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not an ISO-8601 timestamp (e.g. 2026-11-21T10:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class OffsetResolver:
    """Answers offset questions about the topics of one cluster."""

    def __init__(self, bootstrap_servers: str, options: Mapping[str, str] | None = None) -> None:
        self.servers = bootstrap_servers
        self.options = options
        self._watermarks: dict[str, dict[int, tuple[int, int]]] = {}

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        """``{partition: (log start, high watermark)}``."""
        if topic not in self._watermarks:
            self._watermarks[topic] = end_offsets(self.servers, topic, self.options)
        return self._watermarks[topic]

    def _consumer(self) -> Consumer:
        return Consumer(librdkafka_config(self.servers, self.options, **{
            "group.id": "kappalake-offsets", "enable.auto.commit": False}))

    def for_time(self, topic: str, moment: datetime) -> dict[int, int]:
        """The first offset per partition whose timestamp is at or after ``moment`` (the high watermark
        where there is none)."""
        consumer = self._consumer()
        try:
            asked = [TopicPartition(topic, p, _ms(moment)) for p in self.watermarks(topic)]
            found = consumer.offsets_for_times(asked, timeout=30)
        finally:
            consumer.close()
        marks = self.watermarks(topic)
        return {tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][1] for tp in found}

    def first_timestamp(self, topic: str, partition: int) -> datetime | None:
        """The timestamp of the first retained record of a partition (None when it is empty)."""
        low, high = self.watermarks(topic)[partition]
        if low >= high:
            return None
        consumer = self._consumer()
        try:
            consumer.assign([TopicPartition(topic, partition, low)])
            message = consumer.poll(15)
            if message is None or message.error():
                return None
            return datetime.fromtimestamp(message.timestamp()[1] / 1000, tz=timezone.utc)
        finally:
            consumer.close()


def resolve_ranges(resolver: OffsetResolver, topics: list[str], *, from_timestamp: datetime | None = None,
                   from_offsets: Offsets | None = None, from_earliest: bool = False,
                   to_timestamp: datetime | None = None, to_offsets: Offsets | None = None) -> list[OffsetRange]:
    """The offset range per partition of ``topics`` for one start and an optional end (default: the
    current high watermarks). Raises KappalakeError when the start lies before retention or after the
    end of the data, or offsets name unknown partitions or out-of-range positions."""
    if sum([from_timestamp is not None, from_offsets is not None, from_earliest]) != 1:
        raise ConfigError("give exactly one of --from-timestamp, --from-offsets, --from-earliest")
    if to_timestamp is not None and to_offsets is not None:
        raise ConfigError("give at most one of --to-timestamp, --to-offsets")
    if from_timestamp is not None and to_timestamp is not None and to_timestamp <= from_timestamp:
        raise ConfigError(f"--to-timestamp {to_timestamp.isoformat()} is not after --from-timestamp "
                          f"{from_timestamp.isoformat()}")
    for name, given in (("--from-offsets", from_offsets), ("--to-offsets", to_offsets)):
        for topic in (given or {}):
            if topic not in topics:
                raise ConfigError(f"{name} names topic {topic!r}, which the pipeline does not read "
                                  f"(topics: {', '.join(topics)})")
    ranges = []
    for topic in topics:
        marks = resolver.watermarks(topic)
        starts = _starts(resolver, topic, marks, from_timestamp, from_offsets, from_earliest)
        ends = (resolver.for_time(topic, to_timestamp) if to_timestamp is not None
                else {p: (to_offsets or {}).get(topic, {}).get(p, high) for p, (_, high) in marks.items()})
        for partition, (low, high) in sorted(marks.items()):
            end = ends[partition]
            if not low <= end <= high:
                raise KappalakeError(f"--to-offsets {topic}/{partition}={end} is outside the partition's "
                                     f"offsets [{low}, {high}]")
            ranges.append(OffsetRange(topic, partition, starts[partition], max(end, starts[partition])))
    if from_timestamp is not None and not any(r.records for r in ranges):
        raise KappalakeError(f"--from-timestamp {from_timestamp.isoformat()} is after the last record of "
                             f"{', '.join(topics)}: nothing to backfill")
    return ranges


def _starts(resolver: OffsetResolver, topic: str, marks: dict[int, tuple[int, int]], from_timestamp: datetime | None,
            from_offsets: Offsets | None, from_earliest: bool) -> dict[int, int]:
    if from_earliest:
        return {p: low for p, (low, _) in marks.items()}
    if from_offsets is not None:
        given = from_offsets.get(topic, {})
        unknown = sorted(set(given) - set(marks))
        if unknown:
            raise ConfigError(f"--from-offsets names partition {unknown[0]} of {topic!r}, which has partitions "
                              f"{', '.join(map(str, sorted(marks)))}")
        starts = {p: given.get(p, high) for p, (_, high) in marks.items()}
        for p, offset in starts.items():
            low, high = marks[p]
            if offset < low:
                raise KappalakeError(f"--from-offsets {topic}/{p}={offset} is before the partition's log start "
                                     f"{low}: offsets {offset}..{low - 1} were deleted by retention; start at "
                                     f"{low} or replay them from the bronze table (silver/gold source: bronze)")
            if offset > high:
                raise KappalakeError(f"--from-offsets {topic}/{p}={offset} is after the partition's end {high}")
        return starts
    assert from_timestamp is not None
    starts = resolver.for_time(topic, from_timestamp)
    for p, offset in starts.items():
        low, high = marks[p]
        if offset == low and low > 0:
            first = resolver.first_timestamp(topic, p)
            if first is not None and first > from_timestamp:
                raise KappalakeError(
                    f"--from-timestamp {from_timestamp.isoformat()} is before the retention of {topic}/{p}: its "
                    f"first retained record (offset {low}) is from {first.isoformat()}; offsets before {low} were "
                    "deleted. Start at or after that time, use --from-earliest to replay what is left, or "
                    "replay older data from the bronze table (source: bronze)")
    return starts
