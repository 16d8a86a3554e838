"""Parse human durations ("10 minutes", "5s", "1 hour") into Spark interval strings."""

from __future__ import annotations

import math
import re

_UNITS = {
    "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}
MAX_SECONDS = 10 * 366 * 86400  # ten years: longer than any watermark, window or retention this project needs
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


def parse_seconds(text: str) -> float:
    """Return the number of seconds in ``text``; raise ValueError naming the accepted forms."""
    match = _PATTERN.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"expected a duration such as '10 seconds', '5 minutes', '1 hour' or '500 ms', got {text!r}"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {text!r}")
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"duration {str(text)[:40]!r} is too long; at most ten years")
    return seconds


def to_spark_interval(text: str) -> str:
    """Normalise a duration to the interval form Spark's window/watermark functions accept."""
    seconds = parse_seconds(text)
    millis = round(seconds * 1000)
    if millis % 1000 == 0:
        return f"{millis // 1000} seconds"
    return f"{millis} milliseconds"
