"""compare: a CDC silver table against its source rows, column by column, values normalised."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from kappalake.ops.cdc_check import compare

COLUMNS = ["order_id", "status", "amount", "updated_at", "channel"]
WHEN = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def source(**rows: dict) -> dict:
    return {int(k[1:]): {"order_id": int(k[1:]), **v} for k, v in rows.items()}


def test_equal_tables_after_normalising_timestamps_and_decimals() -> None:
    src = source(k1={"status": "paid", "amount": Decimal("12.50"), "updated_at": WHEN, "channel": None})
    silver = [{"order_id": 1, "status": "paid", "amount": Decimal("12.5"), "updated_at": WHEN.replace(tzinfo=None),
               "cdc_lsn": 9}]
    result = compare(src, silver, COLUMNS, "order_id")
    assert (result.mismatched, result.source_rows, result.silver_rows) == (0, 1, 1)


def test_missing_extra_and_different_rows_are_counted_and_named() -> None:
    src = source(k1={"status": "paid"}, k2={"status": "shipped"}, k3={"status": "paid", "channel": "web"})
    silver = [{"order_id": 2, "status": "paid"}, {"order_id": 3, "status": "paid"}, {"order_id": 4, "status": "x"}]
    result = compare(src, silver, COLUMNS, "order_id")
    assert (result.missing, result.extra, result.different, result.mismatched) == (1, 1, 2, 4)
    assert any("order_id 3" in line and "'web'" in line for line in result.examples)


def test_rows_marked_deleted_count_as_absent() -> None:
    src = source(k1={"status": "paid"})
    silver = [{"order_id": 1, "status": "paid", "cdc_deleted": False},
              {"order_id": 2, "status": "paid", "cdc_deleted": True}]
    assert compare(src, silver, COLUMNS, "order_id", "cdc_deleted").mismatched == 0
    assert compare(src, silver, COLUMNS, "order_id").extra == 1
