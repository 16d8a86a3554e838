"""Publish generated events of a reference pipeline to its Kafka topic."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from kappalake.errors import ConfigError, KappalakeError
from kappalake.generator import GeneratorOptions, make_stream
from kappalake.io.kafka.admin import TopicSpec, ensure_topics
from kappalake.io.kafka.producer import EventProducer
from kappalake.io.registry.serializers import value_encoder
from kappalake.runtime.context import RunContext


@dataclass(frozen=True)
class ProduceSummary:
    topic: str
    sent: int
    by_kind: dict[str, int]
    seconds: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def produce(ctx: RunContext, *, events: int | None = None, rate: float | None = None, duration: float | None = None,
            options: GeneratorOptions = GeneratorOptions(), start_time: datetime | None = None,
            events_per_second: float = 1000.0, on_progress: Callable[[int], None] | None = None,
            record_format: str | None = None, evolve: bool = False) -> ProduceSummary:
    """Send ``events`` records (event times spaced at ``events_per_second``), or ``rate`` records/s for
    ``duration`` seconds with wall-clock event times, in the pipeline's ``events.format`` (``record_format``
    must match it when given; ``evolve``: Avro, a second schema version from the middle on). Raises if any
    record was not delivered."""
    pipeline = ctx.pipeline
    if pipeline.generator is None:
        raise ConfigError(f"pipeline {pipeline.name!r} declares no generator (set generator: payments|iot)")
    if not pipeline.source.subscribe:
        raise ConfigError(f"pipeline {pipeline.name!r}: produce needs source.subscribe to name the topic")
    if (events is None) == (rate is None and duration is None) or (rate is None) != (duration is None):
        raise KappalakeError("give either --events N, or --rate R with --duration S")
    if record_format is not None and record_format != pipeline.events.format:
        example = "payments" if record_format == "json" else f"payments_{record_format}"
        raise ConfigError(f"--format {record_format}: pipeline {pipeline.name!r} reads {pipeline.events.format} "
                          f"(events.format); produce for a pipeline that reads {record_format}, e.g. {example}")
    topic = pipeline.source.subscribe[0]
    servers = ctx.bootstrap_servers()
    ensure_topics(servers, [TopicSpec(topic, pipeline.source.partitions)], ctx.kafka_options)
    total = events if events is not None else int((rate or 0) * (duration or 0))
    stream = make_stream(pipeline.generator, options, value_encoder(ctx, topic, total // 2 if evolve else None))
    producer = EventProducer(servers, ctx.kafka_options)
    counts: Counter[str] = Counter()
    started = time.monotonic()
    if events is not None:
        origin = start_time or datetime.now(timezone.utc).replace(microsecond=0)
        records = stream.take(events, origin, events_per_second)
        for i, record in enumerate(records, 1):
            producer.send(topic, record.key, record.value)
            counts[record.kind] += 1
            if on_progress and i % 5000 == 0:
                on_progress(5000)
        if on_progress:
            on_progress(events % 5000)
    else:
        assert rate is not None and duration is not None
        for i in range(total):
            due = started + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            record = stream.next(datetime.now(timezone.utc))
            producer.send(topic, record.key, record.value)
            counts[record.kind] += 1
            if on_progress and (i + 1) % max(1, int(rate // 10)) == 0:
                on_progress(max(1, int(rate // 10)))
    report = producer.flush()
    if report.failed:
        raise KappalakeError(f"{report.failed} of {sum(counts.values())} records failed delivery to {topic!r}: "
                             f"{'; '.join(report.errors)}")
    return ProduceSummary(topic=topic, sent=report.delivered, by_kind={k: counts.get(k, 0) for k in
                                                                       ("valid", "late", "duplicate", "malformed")},
                          seconds=time.monotonic() - started)
