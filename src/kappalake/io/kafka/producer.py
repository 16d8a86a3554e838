"""An idempotent confluent-kafka producer that counts deliveries and never loses a failure silently."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Producer

from kappalake.errors import BrokerUnreachableError
from kappalake.io.kafka.client import librdkafka_config


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class EventProducer:
    """Produce keyed records with ``enable.idempotence`` (acks=all, no reordering, no duplicates on retry)."""

    def __init__(self, bootstrap_servers: str, options: Mapping[str, str] | None = None, **settings: object) -> None:
        config = librdkafka_config(bootstrap_servers, options, **{
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
            "log_level": 3,  # errors only: delivery failures are counted and reported, not just logged
            **settings,
        })
        self.bootstrap_servers = bootstrap_servers
        self.report = DeliveryReport()
        self._producer = Producer(config)

    def _on_delivery(self, error: KafkaError | None, _message: object) -> None:
        if error is None:
            self.report.delivered += 1
        else:
            self.report.failed += 1
            if len(self.report.errors) < 10:
                self.report.errors.append(str(error))

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        """Queue one record; waits for queue space instead of dropping."""
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise BrokerUnreachableError(f"cannot produce to {topic!r} on {self.bootstrap_servers}: {exc}") from None
        self._producer.poll(0)

    def flush(self, timeout: float = 120.0) -> DeliveryReport:
        """Wait for every queued record; raise if some are still undelivered after ``timeout``."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise BrokerUnreachableError(f"{remaining} records were not delivered to {self.bootstrap_servers} "
                                         f"within {timeout:.0f}s (is the broker up?)")
        return self.report
