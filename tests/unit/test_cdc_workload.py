"""The planning half of ``kappalake produce cdc``: a seeded, deterministic mix of every kind of change."""

from __future__ import annotations

from collections import Counter

import pytest

from kappalake.generator.cdc_workload import (ADD_CHANNEL, CATEGORIES, KINDS, MERCHANTS, NEXT_STATUS, CdcWorkload,
                                              OrderBook, channel_of, merchant_rows, plan_changes, redact_dsn)


def _plan(seed: int = 7, changes: int = 5000, book: OrderBook | None = None) -> list:
    return list(plan_changes(seed, changes, book or OrderBook()))


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    assert _plan(7) == _plan(7)
    assert _plan(7) != _plan(8)


def test_exactly_the_requested_changes_covering_every_kind() -> None:
    for changes in (0, 1, 2, 5, 17, 5000):
        steps = _plan(changes=changes)
        assert sum(len(s.changes) for s in steps) == changes
    kinds = Counter(c.kind for s in _plan() for c in s.changes)
    assert set(kinds) == set(KINDS)
    assert {c.op for s in _plan() for c in s.changes} == {"insert", "update", "delete"}


def test_the_alter_comes_once_near_the_middle_and_channel_follows() -> None:
    steps = _plan(changes=5000)
    ddl = [i for i, s in enumerate(steps) if s.ddl is not None]
    assert len(ddl) == 1 and steps[ddl[0]].ddl == ADD_CHANNEL
    before = sum(len(s.changes) for s in steps[:ddl[0]])
    assert 2500 <= before < 2510
    for i, step in enumerate(steps):
        for change in step.changes:
            if change.table == "orders" and change.op != "delete":
                assert ("channel" in dict(change.values)) == (i > ddl[0])
                if i > ddl[0]:
                    assert dict(change.values)["channel"] == channel_of(int(change.key))
    assert [s.ddl for s in _plan(changes=1)] == [ADD_CHANNEL, None]
    assert _plan(changes=0) == []


def test_the_plan_is_consistent_with_a_model_of_the_table() -> None:
    """Every update and delete hits a live order, inserts a missing one; statuses only move forward."""
    order = ("created", "paid", "shipped", "delivered")
    live: dict[int, str] = {}
    top = 0
    for step in _plan(seed=3, changes=20_000):
        for change in step.changes:
            if change.table == "merchants":
                values = dict(change.values)
                assert change.op == "update" and set(values) <= {"category", "risk_tier"}
                assert values.get("category", CATEGORIES[0]) in CATEGORIES and 1 <= values.get("risk_tier", 1) <= 5
                continue
            key, values = int(change.key), dict(change.values)
            if change.op == "insert":
                assert key not in live and values["status"] == "created" and values["amount"] > 0
                live[key] = "created"
                top = max(top, key)
            elif change.op == "delete":
                assert key in live
                del live[key]
            else:
                assert key in live
                if "status" in values:
                    new = values["status"]
                    assert live[key] in NEXT_STATUS and new in NEXT_STATUS[live[key]]
                    assert new == "cancelled" or order.index(new) == order.index(live[key]) + 1
                    live[key] = new
    assert top in live  # the newest order is never deleted: max(order_id) resumes the sequence


def test_patterns_rapid_updates_reinserts_and_multi_row_transactions() -> None:
    steps = _plan(changes=20_000)
    multi = [s for s in steps if len(s.changes) > 1]
    assert multi and all(2 <= len(s.changes) <= 6 and {c.kind for c in s.changes} == {"multi_row"} for s in multi)
    assert all(len(s.changes) <= 1 for s in steps if s.changes and s.changes[0].kind != "multi_row")
    flat = [s.changes[0] for s in steps if len(s.changes) == 1]
    runs = [i for i in range(len(flat) - 4) if all(c.kind == "rapid_update" and c.key == flat[i].key
                                                   for c in flat[i:i + 5])]
    assert runs
    reinserts = [i for i in range(len(flat) - 1) if flat[i].kind == "delete_reinsert" and flat[i].op == "delete"]
    assert reinserts and all(flat[i + 1].op == "insert" and flat[i + 1].key == flat[i].key for i in reinserts)


def test_a_resumed_plan_continues_the_order_ids_and_touches_the_live_orders() -> None:
    book = OrderBook(next_order_id=1001, live={i: "paid" for i in range(900, 1001)}, channel=True)
    steps = _plan(changes=2000, book=book)
    inserted = [int(c.key) for s in steps for c in s.changes if c.op == "insert" and c.kind != "delete_reinsert"]
    assert min(inserted) == 1001 and inserted == sorted(inserted)
    assert any(int(c.key) <= 1000 for s in steps for c in s.changes if c.op != "insert" and c.table == "orders")
    assert all("channel" in dict(c.values) for s in steps for c in s.changes if c.op == "insert")
    assert sum(s.ddl is not None for s in steps) == 1  # once per run, IF NOT EXISTS


def test_the_working_set_stays_bounded() -> None:
    book = OrderBook(max_keys=50)
    _plan(changes=5000, book=book)
    assert len(book.status) <= 50 + 6


def test_merchants_are_the_payments_ids_deterministic_for_the_seed() -> None:
    rows = merchant_rows(7)
    assert [r[0] for r in rows] == [f"m-{i:05d}" for i in range(MERCHANTS)] and rows == merchant_rows(7)
    assert rows != merchant_rows(8)
    assert {r[2] for r in rows} == set(CATEGORIES) and {r[4] for r in rows} == {1, 2, 3, 4, 5}


def test_redact_dsn_hides_passwords() -> None:
    assert redact_dsn("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_dsn("postgresql://u@h/db?password=pw&x=1") == "postgresql://u@h/db?password=***&x=1"
    assert redact_dsn("host=h password=pw dbname=d") == "host=h password=*** dbname=d"
    assert redact_dsn("postgresql://u@h:1/db") == "postgresql://u@h:1/db"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        CdcWorkload("postgresql://x", rate=-1)
