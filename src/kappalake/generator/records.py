"""The event stream: valid events plus late, duplicate and malformed ones, deterministic for a seed.

Kinds:
* ``valid``      a fresh event with event time moving forward.
* ``late``       a fresh event whose event time lies minutes in the past.
* ``duplicate``  the exact key and bytes of an earlier valid or late event (same event_id).
* ``malformed``  truncated JSON, a wrong type, or a missing required field.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Protocol

from kappalake.generator.iot import IotModel
from kappalake.generator.payments import PaymentsModel

Kind = Literal["valid", "late", "duplicate", "malformed"]
KINDS: tuple[Kind, ...] = ("valid", "late", "duplicate", "malformed")
REQUIRED_FIELDS = ("event_id", "event_time")


class Model(Protocol):
    def payload(self, event_id: str, event_time: datetime) -> dict[str, Any]: ...
    def wrong_type(self, payload: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class GeneratedRecord:
    key: bytes
    value: bytes
    kind: Kind
    event_id: str | None
    event_time: datetime | None


@dataclass(frozen=True)
class GeneratorOptions:
    seed: int = 0
    late_fraction: float = 0.0
    duplicate_fraction: float = 0.0
    malformed_fraction: float = 0.0
    late_min_seconds: float = 180.0
    late_max_seconds: float = 600.0

    def __post_init__(self) -> None:
        fractions = (self.late_fraction, self.duplicate_fraction, self.malformed_fraction)
        if any(f < 0 or f > 1 for f in fractions) or sum(fractions) > 1:
            raise ValueError("late, duplicate and malformed fractions must each be in [0, 1] and sum to at most 1")
        if not 0 < self.late_min_seconds <= self.late_max_seconds:
            raise ValueError("need 0 < late_min_seconds <= late_max_seconds")


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2026-11-21T16:00:00.123Z``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class EventStream:
    """Stateful generator: call :meth:`next` with the event time the next fresh event should carry."""

    model: Model
    key_field: str
    options: GeneratorOptions
    rng: random.Random
    _history: list[tuple[bytes, bytes, str, datetime]] = field(default_factory=list)
    _history_cap: int = 10_000

    def _event_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _encode(self, payload: dict[str, Any]) -> bytes:
        body = {k: (format_time(v) if isinstance(v, datetime) else v) for k, v in payload.items()}
        return json.dumps(body, separators=(",", ":")).encode()

    def _remember(self, key: bytes, value: bytes, event_id: str, event_time: datetime) -> None:
        if len(self._history) < self._history_cap:
            self._history.append((key, value, event_id, event_time))
        else:
            self._history[self.rng.randrange(self._history_cap)] = (key, value, event_id, event_time)

    def _pick_kind(self) -> Kind:
        o = self.options
        roll = self.rng.random()
        if roll < o.malformed_fraction:
            return "malformed"
        if roll < o.malformed_fraction + o.duplicate_fraction:
            return "duplicate" if self._history else "valid"
        if roll < o.malformed_fraction + o.duplicate_fraction + o.late_fraction:
            return "late"
        return "valid"

    def next(self, event_time: datetime) -> GeneratedRecord:
        """The next record; fresh events carry ``event_time`` (late ones minutes before it)."""
        kind = self._pick_kind()
        if kind == "duplicate":
            key, value, event_id, original_time = self.rng.choice(self._history)
            return GeneratedRecord(key, value, "duplicate", event_id, original_time)
        if kind == "late":
            event_time = event_time - timedelta(seconds=self.rng.uniform(self.options.late_min_seconds,
                                                                          self.options.late_max_seconds))
        event_id = self._event_id()
        payload = self.model.payload(event_id, event_time)
        key = str(payload[self.key_field]).encode()
        if kind == "malformed":
            return GeneratedRecord(key, self._malform(payload), "malformed", None, None)
        value = self._encode(payload)
        self._remember(key, value, event_id, event_time)
        return GeneratedRecord(key, value, kind, event_id, event_time)

    def _malform(self, payload: dict[str, Any]) -> bytes:
        style = self.rng.choice(("truncated", "wrong_type", "missing_field"))
        if style == "truncated":
            value = self._encode(payload)
            return value[: self.rng.randrange(1, len(value) - 1)]
        if style == "wrong_type":
            return self._encode(self.model.wrong_type(payload))
        missing = self.rng.choice(REQUIRED_FIELDS)
        return self._encode({k: v for k, v in payload.items() if k != missing})

    def take(self, count: int, start_time: datetime, events_per_second: float = 1000.0) -> Iterator[GeneratedRecord]:
        """``count`` records whose fresh events are spaced ``1/events_per_second`` apart in event time."""
        step = timedelta(seconds=1.0 / events_per_second)
        for i in range(count):
            yield self.next(start_time + i * step)


GENERATORS = {"payments": (PaymentsModel, "card_id"), "iot": (IotModel, "device_id")}


def make_stream(generator: str, options: GeneratorOptions) -> EventStream:
    """An :class:`EventStream` for a reference generator (``payments`` or ``iot``)."""
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}; expected one of {', '.join(GENERATORS)}")
    rng = random.Random(options.seed)
    model_class, key_field = GENERATORS[generator]
    return EventStream(model=model_class(rng), key_field=key_field, options=options, rng=rng)
