"""Live gold latency measured from outside the job: paced producer, dashboard-style poller, per-event latency.

The producer sends payment events at a fixed rate with event time = send time and remembers, per
(card, 1-minute window), the send time of each event in order. The poller reads the view the way a
dashboard does (``FINAL``, with a client of its own) every ``poll_s`` and remembers when each window's
``txn_count`` first reached each value; with ``out`` it also appends each such moment to a JSON-lines
file, so that another process can follow it (:func:`load_reached`). An event that is
the k-th of its window is in ClickHouse when the window's count first reached k: its latency is that
moment minus its send time.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any


def minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@dataclass
class Sent:
    """What the producer sent: per window the send times in order, and every event for the final check."""

    times: dict[tuple[str, datetime], list[float]] = field(default_factory=lambda: defaultdict(list))
    events: list[dict[str, Any]] = field(default_factory=list)


def produce_paced(bootstrap: str, topic: str, rate: float, seconds: float, sent: Sent, key: bytes,
                  seed: int) -> float:
    """Send ``rate`` events/s for ``seconds`` (event time = now); return the achieved rate."""
    from kappalake.generator import GeneratorOptions, make_stream
    from kappalake.io.kafka.producer import EventProducer

    stream = make_stream("payments", GeneratorOptions(seed=seed))
    producer = EventProducer(bootstrap, {})
    total = int(rate * seconds)
    started = time.time()
    for i in range(total):
        due = started + i / rate
        pause = due - time.time()
        if pause > 0.002:
            time.sleep(pause)
        now = datetime.now(timezone.utc)
        record = stream.next(now)
        producer.send(topic, record.key, record.value)
        payload = json.loads(record.value)
        card = hmac.new(key, payload["card_id"].encode(), hashlib.sha256).hexdigest()
        event_time = datetime.fromisoformat(payload["event_time"].replace("Z", "+00:00"))
        sent.times[(card, minute(event_time))].append(time.time())
        sent.events.append({"card_id": card, "event_time": event_time, "amount": float(payload["amount"]),
                            "merchant_id": payload["merchant_id"], "country": payload["country"]})
    report = producer.flush()
    if report.failed:
        raise RuntimeError(f"{report.failed} events failed delivery: {report.errors[:3]}")
    return total / (time.time() - started)


class Poller:
    """Reads ``table`` FINAL every ``poll_s``; keeps, per window, when its count first reached each value."""

    def __init__(self, dsn: str, table: str, poll_s: float = 0.2, out: Path | None = None) -> None:
        import clickhouse_connect

        self.client = clickhouse_connect.get_client(dsn=dsn)
        self.table = table
        self.poll_s = poll_s
        self.out = out.open("a", buffering=1) if out is not None else None
        self.reached: dict[tuple[str, datetime], list[tuple[int, float]]] = defaultdict(list)
        self.polls: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.out is not None:
            self.out.close()

    def _run(self) -> None:
        sql = (f"SELECT card_id, window_start, txn_count FROM `{self.table}` FINAL "
               "WHERE window_start >= now() - INTERVAL 4 MINUTE")
        while not self._stop.is_set():
            began = time.time()
            try:
                rows = self.client.query(sql).result_rows
            except Exception:  # noqa: BLE001 - a table not created yet, a passing error: poll again
                rows = []
            seen = time.time()
            self.polls.append(seen - began)
            for card, start, count in rows:
                start = start.replace(tzinfo=timezone.utc) if start.tzinfo is None else start
                history = self.reached[(card, start)]
                if not history or count > history[-1][0]:
                    history.append((int(count), seen))
                    if self.out is not None:
                        self.out.write(json.dumps([card, start.isoformat(), int(count), seen]) + "\n")
            if self.out is not None:
                self.out.write(json.dumps(["_poll", seen - began]) + "\n")
            self._stop.wait(max(0.0, self.poll_s - (time.time() - began)))


@dataclass
class Reached:
    """What a poller saw, as read back from its JSON-lines file."""

    reached: dict[tuple[str, datetime], list[tuple[int, float]]]
    polls: list[float]


def load_reached(path: Path) -> Reached:
    """The reach history a :class:`Poller` with ``out=path`` has written so far (a partial last line skipped)."""
    reached: dict[tuple[str, datetime], list[tuple[int, float]]] = defaultdict(list)
    polls: list[float] = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if item[0] == "_poll":
                polls.append(item[1])
            else:
                reached[(item[0], datetime.fromisoformat(item[1]))].append((item[2], item[3]))
    return Reached(reached, polls)


def latencies(sent: Sent, poller: Poller | Reached, since: float = 0.0, until: float = float("inf")) -> tuple[list[float], int]:
    """(latency of every event sent in [since, until) that reached ClickHouse, events never seen)."""
    out, missing = [], 0
    for window, times in sent.times.items():
        history = poller.reached.get(window, [])
        counts = [c for c, _ in history]
        for rank, sent_at in enumerate(times, 1):
            if not since <= sent_at < until:
                continue
            i = bisect.bisect_left(counts, rank)
            if i == len(counts):
                missing += 1
            else:
                out.append(max(0.0, history[i][1] - sent_at))
    return out, missing


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def expected_windows(events: list[dict[str, Any]]) -> dict[tuple[str, datetime], tuple[int, float, float, int, int]]:
    """(count, sum, max, distinct merchants, distinct countries) per (card, 1-minute window)."""
    acc: dict[tuple[str, datetime], list[Any]] = {}
    for e in events:
        k = (e["card_id"], minute(e["event_time"]))
        a = acc.setdefault(k, [0, 0.0, float("-inf"), set(), set()])
        a[0] += 1
        a[1] += e["amount"]
        a[2] = max(a[2], e["amount"])
        a[3].add(e["merchant_id"])
        a[4].add(e["country"])
    return {k: (a[0], round(a[1], 2), a[2], len(a[3]), len(a[4])) for k, a in acc.items()}


def mismatched(dsn: str, table: str, events: list[dict[str, Any]], since: datetime) -> tuple[int, int]:
    """(windows, windows whose FINAL row differs from the produced events) for windows from ``since``."""
    import clickhouse_connect

    expected = expected_windows(events)
    client = clickhouse_connect.get_client(dsn=dsn)
    rows = client.query(f"SELECT card_id, window_start, txn_count, amount_sum, amount_max, merchants, countries "
                        f"FROM `{table}` FINAL WHERE window_start >= {{s:DateTime64(6, 'UTC')}}",
                        parameters={"s": minute(since) - timedelta(minutes=1)}).result_rows
    actual = {(r[0], r[1].replace(tzinfo=timezone.utc) if r[1].tzinfo is None else r[1]): r[2:] for r in rows}
    bad = 0
    for k, (n, total, high, merchants, countries) in expected.items():
        got = actual.get(k)
        if got is None or int(got[0]) != n or abs(float(got[1]) - total) > 0.005 or abs(float(got[2]) - high) > 0.005 \
                or abs(int(got[3]) - merchants) > 0 or abs(int(got[4]) - countries) > 0:
            bad += 1
    bad += len(set(actual) - set(expected))
    return len(expected), bad
