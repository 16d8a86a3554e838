"""The event stream: valid events plus late, duplicate and malformed ones, deterministic for a seed.

Kinds:
* ``valid``      a fresh event with event time moving forward.
* ``late``       a fresh event whose event time lies minutes in the past.
* ``duplicate``  the exact key and bytes of an earlier valid or late event (same event_id).
* ``malformed``  truncated JSON, a wrong type, or a missing required field.
"""

from __future__ import annotations

import json
import json.encoder
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
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


def _record_builder() -> Callable[[bytes, bytes, Kind, str | None, datetime | None], GeneratedRecord]:
    """``GeneratedRecord(...)`` without the frozen dataclass ``__init__``.

    That ``__init__`` sets each field with ``object.__setattr__``, about a tenth of the cost of a
    whole record; setting the instance dict in one step builds the same object. The shortcut is
    used only while the class is a plain dict-backed dataclass without ``__post_init__`` and the
    result equals a normally built record; otherwise records are built by the class itself.
    """
    new, set_attribute = object.__new__, object.__setattr__

    def build(key: bytes, value: bytes, kind: Kind, event_id: str | None,
              event_time: datetime | None) -> GeneratedRecord:
        record = new(GeneratedRecord)
        set_attribute(record, "__dict__", {"key": key, "value": value, "kind": kind, "event_id": event_id,
                                           "event_time": event_time})
        return record

    probe = (b"k", b"v", "late", "id", datetime(2000, 1, 1, tzinfo=timezone.utc))
    try:
        usable = (not hasattr(GeneratedRecord, "__post_init__") and not hasattr(GeneratedRecord, "__slots__")
                  and [f.name for f in fields(GeneratedRecord)] == ["key", "value", "kind", "event_id", "event_time"]
                  and build(*probe) == GeneratedRecord(*probe))
    except Exception:
        usable = False
    return build if usable else GeneratedRecord


_new_record = _record_builder()


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


_UTC = timezone.utc
_SECOND = timedelta(seconds=1)
_MILLIS = tuple(f"{ms:03d}Z" for ms in range(1000))
_NO_SECOND = (datetime.max.replace(tzinfo=_UTC), datetime.min.replace(tzinfo=_UTC), "")
# The two UTC seconds formatted last, most recent first, as (start, end, "YYYY-MM-DDTHH:MM:SS.").
# Consecutive events mostly share a second, so strftime runs about once per second of event time;
# the second slot keeps the fresh events' second while a late event (minutes back) is formatted.
_recent_seconds: tuple[tuple[datetime, datetime, str], tuple[datetime, datetime, str]] = (_NO_SECOND, _NO_SECOND)


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2026-11-21T16:00:00.123Z``."""
    global _recent_seconds
    if type(moment) is datetime and moment.tzinfo is _UTC:
        recent = _recent_seconds
        first = recent[0]
        if first[0] <= moment < first[1]:
            return first[2] + _MILLIS[moment.microsecond // 1000]
        second = recent[1]
        if second[0] <= moment < second[1]:
            _recent_seconds = (second, first)
            return second[2] + _MILLIS[moment.microsecond // 1000]
        start = moment.replace(microsecond=0)
        try:
            end = start + _SECOND
        except OverflowError:  # the last second of year 9999
            pass
        else:
            prefix = start.strftime("%Y-%m-%dT%H:%M:%S.")
            _recent_seconds = ((start, end, prefix), first)
            return prefix + _MILLIS[moment.microsecond // 1000]
    return moment.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _json_default(value: Any) -> str:
    """How the encoder writes values JSON has no type for: datetimes as :func:`format_time`."""
    if isinstance(value, datetime):
        return format_time(value)
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _make_json_encoder() -> Callable[[dict[str, Any]], str]:
    """``json.dumps(payload, separators=(",", ":"))`` with datetimes written by format_time, built once.

    ``JSONEncoder.encode`` sets up a new C encoder on every call; records are encoded millions of
    times, so the C encoder (the very one json.dumps uses) is made once here. Without the C
    accelerator, or if its constructor ever changes, the plain encoder gives the same bytes.
    """
    fallback = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return fallback
    probe = {"a": [1, 2.5, None, True, "\u00e9"], "t": datetime(2000, 1, 1, tzinfo=timezone.utc)}
    try:  # markers=None: no circular-reference bookkeeping (flat payloads), nothing kept between calls
        c_encode = make(None, _json_default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
        if "".join(c_encode(probe, 0)) != fallback(probe):
            return fallback
    except Exception:
        return fallback

    def encode(payload: dict[str, Any]) -> str:
        return "".join(c_encode(payload, 0))

    return encode


_encode_json = _make_json_encoder()

# uuid.UUID(int=n, version=4) sets these bits; doing it on the int and formatting directly
# gives the same string without constructing a UUID object.
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


@dataclass
class EventStream:
    """Stateful generator: call :meth:`next` with the event time the next fresh event should carry."""

    model: Model
    key_field: str
    options: GeneratorOptions
    rng: random.Random
    _history: list[tuple[bytes, bytes, str, datetime]] = field(default_factory=list)
    _history_cap: int = 10_000
    #: Payload -> record value for a binary format (Avro, Protobuf); None: JSON.
    encode: Callable[[dict[str, Any]], bytes] | None = None

    def _event_id(self) -> str:
        h = "%032x" % (self.rng.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _encode(self, payload: dict[str, Any]) -> bytes:
        return _encode_json(payload).encode()

    def next(self, event_time: datetime) -> GeneratedRecord:
        """The next record; fresh events carry ``event_time`` (late ones minutes before it)."""
        # The kind roll, the duplicate pick, the lateness, the event id, the payload and the history
        # slot draw from the RNG in this order; the order is what makes a seed reproduce its bytes.
        rng = self.rng
        options = self.options
        roll = rng.random()
        malformed_below = options.malformed_fraction
        duplicate_below = malformed_below + options.duplicate_fraction
        kind: Kind = "valid"
        if roll < malformed_below:
            kind = "malformed"
        elif roll < duplicate_below:
            if self._history:  # nothing to repeat yet: a fresh valid event instead
                key, value, event_id, original_time = rng.choice(self._history)
                return _new_record(key, value, "duplicate", event_id, original_time)
        elif roll < duplicate_below + options.late_fraction:
            kind = "late"
            event_time = event_time - timedelta(seconds=rng.uniform(options.late_min_seconds,
                                                                     options.late_max_seconds))
        event_id = self._event_id()
        payload = self.model.payload(event_id, event_time)
        key = str(payload[self.key_field]).encode()
        if kind == "malformed":
            return _new_record(key, self._malform(payload), "malformed", None, None)
        value = _encode_json(payload).encode() if self.encode is None else self.encode(payload)
        remembered = (key, value, event_id, event_time)
        history = self._history
        if len(history) < self._history_cap:
            history.append(remembered)
        else:
            history[rng.randrange(self._history_cap)] = remembered
        return _new_record(key, value, kind, event_id, event_time)

    def _malform(self, payload: dict[str, Any]) -> bytes:
        if self.encode is not None:  # a binary record cut short after its 5-byte wire-format header
            value = self.encode(payload)
            return value[: self.rng.randrange(6, len(value) - 1)]
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
        # start_time + i * step, added up step by step: timedelta arithmetic is exact (whole microseconds),
        # and adding a zero timedelta first normalises the start exactly as ``start_time + 0 * step`` did.
        event_time = start_time + timedelta(0)
        next_record = self.next
        for _ in range(count):
            yield next_record(event_time)
            event_time += step


GENERATORS = {"payments": (PaymentsModel, "card_id"), "iot": (IotModel, "device_id")}


def make_stream(generator: str, options: GeneratorOptions,
                encode: Callable[[dict[str, Any]], bytes] | None = None) -> EventStream:
    """An :class:`EventStream` for a reference generator (``payments`` or ``iot``); ``encode`` writes the
    values of a binary format (default JSON)."""
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}; expected one of {', '.join(GENERATORS)}")
    rng = random.Random(options.seed)
    model_class, key_field = GENERATORS[generator]
    return EventStream(model=model_class(rng), key_field=key_field, options=options, rng=rng, encode=encode)
