"""Helpers for tests against a real Prometheus: its HTTP API, waiting, and a time-compressed rules copy."""

from __future__ import annotations

import copy
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
RANGE = re.compile(r"\[(\d+)(ms|s|m|h|d)\]")


def api(url: str, path: str, **params: str) -> Any:
    """``data`` of a successful Prometheus API answer."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}{path}{query}", timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


def _seconds(value: str, unit: str) -> float:
    return int(value) * UNITS[unit]


def _duration(seconds: float) -> str:
    millis = max(int(round(seconds * 1000)), 1)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def compress_rules(rules: dict, factor: float) -> dict:
    """A copy of a rules file (parsed) in which every ``for:`` and every range window ``[5m]`` of an
    expression is divided by ``factor``; names, thresholds, labels and annotations stay as they are."""
    out = copy.deepcopy(rules)
    for group in out["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", str(rule["for"]))
                assert match, rule["for"]
                rule["for"] = _duration(_seconds(*match.groups()) / factor)
            rule["expr"] = RANGE.sub(lambda m: f"[{_duration(_seconds(*m.groups()) / factor)}]", rule["expr"])
    return out


def write_compressed_rules(source: Path, target: Path, factor: float) -> Path:
    """``compress_rules`` of ``source`` written to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(compress_rules(yaml.safe_load(source.read_text()), factor), sort_keys=False))
    return target
