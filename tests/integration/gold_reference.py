"""An independent pandas computation of gold windows from the records of a topic.

It knows only the produced records and the documented rules: a record is valid when its JSON carries
every declared field with the declared type; the first record of an event id counts; an (event, window)
pair is late when the window ended at or before (highest event time of the earlier runs - watermark).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from datetime import datetime, timedelta

import pandas as pd

from kappalake.config.durations import parse_seconds
from kappalake.config.models import GoldViewConfig, PipelineConfig

_NUMERIC = {"int", "long", "double", "float"}


def _valid(payload: object, pipeline: PipelineConfig) -> bool:
    if not isinstance(payload, dict):
        return False
    for name, spec in pipeline.events.schema_.items():
        value = payload.get(name)
        if value is None:
            if spec.required:
                return False
            continue
        numeric = spec.type in _NUMERIC or spec.type.startswith("decimal")
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return False
        if not numeric and not isinstance(value, str):
            return False
        if spec.allowed is not None and value not in spec.allowed:
            return False
        if spec.min is not None and value < spec.min or spec.max is not None and value > spec.max:
            return False
    try:
        pd.Timestamp(payload[pipeline.events.time])
    except (ValueError, TypeError):
        return False
    return True


def unique_events(values_by_round: Iterable[list[bytes]], pipeline: PipelineConfig, pii_key: str | None) -> pd.DataFrame:
    """Valid, first-seen events with the round (run) that brought them; PII fields pseudonymised."""
    seen: set[str] = set()
    rows = []
    for round_no, values in enumerate(values_by_round):
        for value in values:
            try:
                payload = json.loads(value)
            except ValueError:
                continue
            if not _valid(payload, pipeline) or payload[pipeline.events.id] in seen:
                continue
            seen.add(payload[pipeline.events.id])
            for name in pipeline.silver.pii.fields:
                assert pii_key is not None
                payload[name] = hmac.new(pii_key.encode(), str(payload[name]).encode(), hashlib.sha256).hexdigest()
            rows.append({**payload, "_round": round_no})
    frame = pd.DataFrame(rows)
    frame[pipeline.events.time] = pd.to_datetime(frame[pipeline.events.time], utc=True, format="ISO8601")
    return frame


def windows(frame: pd.DataFrame, view: GoldViewConfig, time_column: str) -> pd.DataFrame:
    """One row per (event, window) with window_start/window_end (tumbling and sliding)."""
    size = timedelta(seconds=parse_seconds(view.window.size or "0 seconds"))
    slide = timedelta(seconds=parse_seconds(view.window.slide)) if view.window.slide else size
    parts = []
    for k in range(int(size / slide)):
        start = frame[time_column].dt.floor(pd.Timedelta(slide)) - k * pd.Timedelta(slide)
        part = frame.assign(window_start=start, window_end=start + pd.Timedelta(size))
        parts.append(part[(part[time_column] >= part.window_start) & (part[time_column] < part.window_end)])
    return pd.concat(parts, ignore_index=True)


def split_late(framed: pd.DataFrame, pipeline: PipelineConfig, view: GoldViewConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(on-time pairs, late pairs): late when the window ended by the high water of earlier rounds - watermark."""
    time_column = pipeline.view_time(view)
    delay = pd.Timedelta(seconds=parse_seconds(pipeline.view_watermark(view)))
    high = framed.groupby("_round")[time_column].max().cummax()
    base = framed["_round"].map(lambda r: high.get(r - 1))
    late = base.notna() & (framed["window_end"] <= base - delay)
    return framed[~late], framed[late]


def expected_view(events: pd.DataFrame, pipeline: PipelineConfig, view: GoldViewConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(expected window rows, late pairs) of ``view``."""
    framed = windows(events, view, pipeline.view_time(view))
    on_time, late = split_late(framed, pipeline, view)
    grouped = on_time.groupby([*view.group_by, "window_start", "window_end"])
    columns = {}
    for name, metric in view.metrics.items():
        column = grouped[metric.column] if metric.column else None
        columns[name] = {
            "count": lambda: grouped.size(),
            "sum": lambda c=column: c.sum(),
            "max": lambda c=column: c.max(),
            "min": lambda c=column: c.min(),
            "avg": lambda c=column: c.mean(),
            "stddev": lambda c=column: c.std(ddof=1),
            "approx_count_distinct": lambda c=column: c.nunique(),
        }[metric.fn]()
    return pd.DataFrame(columns).reset_index(), late


def as_naive_utc(value: datetime | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp
