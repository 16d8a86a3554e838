"""``kappalake produce cdc``: a seeded mix of row changes against the CDC sample schema in PostgreSQL.

:func:`plan_changes` is pure (seed + live orders -> steps); :class:`CdcWorkload` seeds the payments generator's
300 merchants, then runs a plan at a paced rate, one transaction per step. A *change* is one row change: a 3-row
transaction counts 3; the one ``ALTER TABLE`` (mid-run) counts none.
"""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from kappalake.errors import CdcSourceError

MERCHANTS = 300  # m-00000 .. m-00299, the merchant ids of generator/payments.py
CATEGORIES = ("grocery", "travel", "electronics", "fuel", "restaurants", "gaming")
COUNTRIES = ("US", "GB", "DE", "FR", "NL", "JP", "BR", "IN")
CHANNELS = ("web", "app", "pos")
ADD_CHANNEL = "ALTER TABLE orders ADD COLUMN IF NOT EXISTS channel text"
NEXT_STATUS = {"created": ("paid", "paid", "paid", "cancelled"), "paid": ("shipped", "shipped", "shipped", "cancelled"),
               "shipped": ("delivered",)}
PATTERNS = (("insert", 30), ("status_update", 22), ("amount_update", 8), ("delete", 4), ("delete_reinsert", 4),
            ("rapid_update", 3), ("multi_row", 12), ("merchant_update", 5))  # weight per pattern, not per row
KINDS = tuple(name for name, _ in PATTERNS)
_NAMES = (("Blue", "Quick", "Golden", "North", "Urban", "Happy", "Prime", "Silver"),
          ("Mart", "Trips", "Gadgets", "Fuel", "Bistro", "Games", "Goods", "Depot"))


@dataclass(frozen=True)
class Change:
    """One row change. ``kind`` is the pattern it belongs to; ``op`` insert, update or delete."""
    kind: str
    op: str
    table: str
    key: int | str
    values: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Step:
    """One transaction: row changes, or the DDL statement."""
    changes: tuple[Change, ...] = ()
    ddl: str | None = None


class OrderBook:
    """The planner's model of the live orders it may touch (at most ``max_keys``; older ones are left alone)."""

    def __init__(self, next_order_id: int = 1, live: dict[int, str] | None = None, channel: bool = False,
                 max_keys: int = 2000) -> None:
        self.next_order_id, self.channel, self.max_keys = next_order_id, channel, max_keys
        self.status: dict[int, str] = {}
        self._keys: dict[bool, list[int]] = {True: [], False: []}  # open (not delivered / cancelled) or not
        self._pos: dict[int, int] = {}
        for order_id, status in sorted((live or {}).items()):
            self.put(order_id, status)

    def put(self, order_id: int, status: str) -> None:
        if order_id in self.status:
            self.drop(order_id)
        keys = self._keys[status in NEXT_STATUS]
        self.status[order_id], self._pos[order_id] = status, len(keys)
        keys.append(order_id)

    def drop(self, order_id: int) -> None:
        keys = self._keys[self.status.pop(order_id) in NEXT_STATUS]
        i, last = self._pos.pop(order_id), keys.pop()
        if last != order_id:
            keys[i], self._pos[last] = last, i

    def pick(self, rng: random.Random, open_only: bool = False) -> int | None:
        opened, closed = self._keys[True], self._keys[False]
        n = len(opened) + (0 if open_only else len(closed))
        i = rng.randrange(n) if n else -1
        return None if i < 0 else opened[i] if i < len(opened) else closed[i - len(opened)]

    def trim(self, rng: random.Random) -> None:
        while len(self.status) > self.max_keys:  # forget random orders, closed ones first (they stay in the table)
            self.drop((keys := self._keys[False] or self._keys[True])[rng.randrange(len(keys))])


def channel_of(order_id: int) -> str:
    """An order's sales channel: fixed per order, so an update after the ALTER backfills the same value."""
    return CHANNELS[((order_id * 2654435761) >> 7) % len(CHANNELS)]


def _amount(rng: random.Random) -> Decimal:
    return Decimal(f"{max(0.01, min(rng.lognormvariate(3.5, 1.0), 99_999.0)):.2f}")


def _new_order(rng: random.Random, book: OrderBook, kind: str, order_id: int | None = None) -> Change:
    if order_id is None:
        order_id, book.next_order_id = book.next_order_id, book.next_order_id + 1
    values: dict[str, Any] = {"merchant_id": f"m-{rng.randrange(MERCHANTS):05d}",
                              "customer_id": f"c-{rng.randrange(20_000):06d}", "status": "created",
                              "amount": _amount(rng)}
    if book.channel:
        values["channel"] = channel_of(order_id)
    book.put(order_id, "created")
    return Change(kind, "insert", "orders", order_id, tuple(values.items()))


def _update(rng: random.Random, book: OrderBook, kind: str, order_id: int, status: bool) -> Change:
    values: dict[str, Any] = {"amount": _amount(rng)}
    if status and book.status[order_id] in NEXT_STATUS:
        values = {"status": rng.choice(NEXT_STATUS[book.status[order_id]])}
        book.put(order_id, values["status"])
    if book.channel:
        values["channel"] = channel_of(order_id)
    return Change(kind, "update", "orders", order_id, tuple(values.items()))


def _pattern(rng: random.Random, book: OrderBook, left: int) -> list[Step]:
    kind = rng.choices(KINDS, weights=[w for _, w in PATTERNS])[0]
    if kind == "merchant_update":
        values = {"category": rng.choice(CATEGORIES)} if rng.random() < 0.5 else {"risk_tier": rng.randint(1, 5)}
        return [Step((Change(kind, "update", "merchants", f"m-{rng.randrange(MERCHANTS):05d}",
                             tuple(values.items())),))]
    if kind == "multi_row" and left >= 2:
        changes = []
        for _ in range(min(left, rng.randint(2, 6))):
            order_id = book.pick(rng) if rng.random() < 0.5 else None
            changes.append(_new_order(rng, book, kind) if order_id is None
                           else _update(rng, book, kind, order_id, rng.random() < 0.6))
        return [Step(tuple(changes))]
    newest = book.next_order_id - 1  # never deleted, so max(order_id) tells a later run where to continue
    order_id = book.pick(rng, open_only=kind in ("status_update", "rapid_update"))
    if order_id is None or kind in ("multi_row", "insert") or (kind in ("delete_reinsert", "rapid_update")
                                                               and left < 2):
        return [Step((_new_order(rng, book, "insert"),))]
    if kind in ("status_update", "amount_update"):
        return [Step((_update(rng, book, kind, order_id, kind == "status_update"),))]
    if kind == "rapid_update":
        return [Step((_update(rng, book, kind, order_id, rng.random() < 0.3),)) for _ in range(min(left, 5))]
    if kind in ("delete", "delete_reinsert") and order_id == newest:
        return [Step((_update(rng, book, "amount_update", order_id, False),))]
    book.drop(order_id)
    delete = Step((Change(kind, "delete", "orders", order_id),))
    return [delete] if kind == "delete" else [delete, Step((_new_order(rng, book, kind, order_id),))]


def plan_changes(seed: int, changes: int, book: OrderBook) -> Iterator[Step]:
    """Steps making exactly ``changes`` row changes, with the ALTER once (when half are done), updating
    ``book`` as it goes. Deterministic for the seed and the book's start state."""
    rng = random.Random(f"kappalake-cdc:{seed}:{book.next_order_id}")
    done, altered = 0, changes == 0
    while done < changes:
        if not altered and done >= changes // 2:
            altered, book.channel = True, True
            yield Step(ddl=ADD_CHANNEL)
        for step in _pattern(rng, book, changes - done):
            done += len(step.changes)
            yield step
        book.trim(rng)


def merchant_rows(seed: int) -> list[tuple[str, str, str, str, int]]:
    """The 300 seeded merchants: (merchant_id, name, category, country, risk_tier)."""
    rng = random.Random(f"kappalake-cdc-merchants:{seed}")
    return [(f"m-{i:05d}", f"{rng.choice(_NAMES[0])} {rng.choice(_NAMES[1])} {i}", rng.choice(CATEGORIES),
             rng.choice(COUNTRIES), rng.randint(1, 5)) for i in range(MERCHANTS)]


def redact_dsn(dsn: str) -> str:
    """The DSN without its password (URL ``user:pw@`` and ``password=`` forms)."""
    dsn = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)('[^']*'|[^&\s]+)", r"\1***", dsn)


@dataclass
class CdcSummary:
    dsn: str
    requested: int
    by_kind: Counter = field(default_factory=Counter)  # row changes per pattern
    by_op: Counter = field(default_factory=Counter)  # row changes per insert / update / delete
    transactions: int = 0
    multi_row_transactions: int = 0
    schema_changes: int = 0
    merchants_seeded: int = 0
    skipped: int = 0  # updates / deletes that found no row (changed by someone else)
    first_order_id: int = 0
    next_order_id: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def changes(self) -> int:
        return sum(self.by_op.values())

    @property
    def rate(self) -> float:
        return self.changes / self.seconds if self.seconds > 0 else 0.0


class CdcWorkload:
    """Run ``changes`` row changes at about ``rate`` changes/s (0: as fast as possible) against ``dsn``.
    ``orders_keys`` bounds the recent orders the run updates and deletes. Unless ``durable``, the session commits
    with ``synchronous_commit = off`` (no fsync wait per commit: ~6x the rate; a crash may lose the last ms)."""

    def __init__(self, dsn: str, seed: int = 7, rate: float = 1000.0, changes: int = 10_000, *,
                 orders_keys: int = 2000, durable: bool = False) -> None:
        if rate < 0 or changes < 0 or orders_keys < 1:
            raise ValueError("rate and changes must be >= 0, orders_keys >= 1")
        self.dsn, self.seed, self.rate, self.changes, self.orders_keys = dsn, seed, rate, changes, orders_keys
        self.durable, self.stop = durable, threading.Event()

    def _connect(self) -> Any:
        try:
            return psycopg.connect(self.dsn, connect_timeout=10)
        except psycopg.Error as exc:
            raise CdcSourceError(f"cannot connect to the CDC Postgres at {redact_dsn(self.dsn)}: "
                                 f"{redact_dsn((str(exc).strip() or type(exc).__name__).splitlines()[-1])}") from None

    def _prepare(self, conn: Any, summary: CdcSummary) -> OrderBook:
        if not self.durable:
            conn.execute("SET synchronous_commit = off")
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema "
                                             "= current_schema() AND table_name IN ('orders', 'merchants')")}
        if tables != {"orders", "merchants"}:
            raise CdcSourceError(f"the CDC schema (tables orders, merchants) is missing in {summary.dsn}; "
                                 "'kappalake stack up --with cdc' creates it")
        if conn.execute("SELECT count(*) FROM merchants").fetchone()[0] == 0:
            conn.cursor().executemany("INSERT INTO merchants (merchant_id, name, category, country, risk_tier) "
                                      "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", merchant_rows(self.seed))
            summary.merchants_seeded = MERCHANTS
        next_id = conn.execute("SELECT coalesce(max(order_id), 0) + 1 FROM orders").fetchone()[0]
        live = dict(conn.execute("SELECT order_id, status FROM orders ORDER BY order_id DESC LIMIT %s",
                                 (self.orders_keys,)).fetchall())
        channel = conn.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                               "AND table_name = 'orders' AND column_name = 'channel'").fetchone() is not None
        conn.commit()
        summary.first_order_id = summary.next_order_id = next_id
        return OrderBook(next_id, live, channel, self.orders_keys)

    @staticmethod
    def _execute(cur: Any, change: Change) -> int:
        cols, params = [c for c, _ in change.values], [v for _, v in change.values]
        key = "order_id" if change.table == "orders" else "merchant_id"
        if change.op == "insert":
            cur.execute(f"INSERT INTO {change.table} ({key}, {', '.join(cols)}) VALUES "
                        f"(%s{', %s' * len(cols)})", [change.key, *params])
        elif change.op == "update":
            cur.execute(f"UPDATE {change.table} SET {''.join(f'{c} = %s, ' for c in cols)}updated_at = now() "
                        f"WHERE {key} = %s", [*params, change.key])
        else:
            cur.execute(f"DELETE FROM {change.table} WHERE {key} = %s", [change.key])
        return cur.rowcount

    def run(self, on_progress: Callable[[int], None] | None = None) -> CdcSummary:
        """Seed the merchants if empty, run the plan; SIGINT / SIGTERM stop between transactions."""
        summary, conn = CdcSummary(redact_dsn(self.dsn), self.changes), self._connect()
        handlers = ({signum: signal.signal(signum, lambda *_: self.stop.set()) for signum in (signal.SIGINT,
                    signal.SIGTERM)} if threading.current_thread() is threading.main_thread() else {})
        started = time.monotonic()
        try:
            book = self._prepare(conn, summary)
            started, done = time.monotonic(), 0
            for step in plan_changes(self.seed, self.changes, book):
                self.stop.wait(max(0.0, started + done / self.rate - time.monotonic()) if self.rate else 0)
                if self.stop.is_set():
                    summary.interrupted = True
                    break
                with conn.cursor() as cur:
                    if step.ddl is not None:
                        cur.execute(step.ddl)
                        summary.schema_changes += 1
                    for change in step.changes:
                        rows = self._execute(cur, change)
                        summary.by_kind[change.kind] += rows
                        summary.by_op[change.op] += rows
                        summary.skipped += 1 - rows
                        if change.op == "insert" and change.table == "orders":
                            summary.next_order_id = max(summary.next_order_id, int(change.key) + 1)
                conn.commit()
                summary.transactions += 1
                summary.multi_row_transactions += len(step.changes) > 1
                done += len(step.changes)
                if on_progress and step.changes:
                    on_progress(len(step.changes))
        except psycopg.Error as exc:
            raise CdcSourceError(f"the CDC Postgres at {summary.dsn} failed: {redact_dsn(str(exc).strip())}") from None
        finally:
            summary.seconds = time.monotonic() - started
            if not conn.broken:
                conn.rollback()  # after an interruption or a failure: nothing half-done stays open
            conn.close()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return summary
