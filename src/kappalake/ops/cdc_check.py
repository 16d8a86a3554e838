"""Compare a CDC silver table with its source table in PostgreSQL, row for row and column for column.

Values are normalised before comparing: timestamps to UTC microseconds, decimals and floats to two
places (the sample schema's money), everything else as read. Silver's change metadata and lineage
columns (``cdc_*``, ``source_*``, ``kafka_timestamp``) are not compared; every source column is, including
columns added to the source table after the pipeline was declared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any


@dataclass
class Comparison:
    """Rows on each side, keys missing on either side, and rows whose values differ (a few examples)."""

    source_rows: int
    silver_rows: int
    missing: int
    extra: int
    different: int
    examples: list[str] = field(default_factory=list)

    @property
    def mismatched(self) -> int:
        return self.missing + self.extra + self.different


def _normal(value: Any) -> Any:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")
    if isinstance(value, (Decimal, float)):
        return f"{Decimal(str(value)):.2f}"
    return value


def source_rows(dsn: str, table: str, key: str) -> tuple[list[str], dict[Any, dict[str, Any]]]:
    """(column names, rows by key) of ``SELECT * FROM table``."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn) as conn:
        cursor = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
        names = [d.name for d in cursor.description or []]
        rows = {row[names.index(key)]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}
    return names, rows


def compare(source: dict[Any, dict[str, Any]], silver: list[dict[str, Any]], columns: list[str], key: str,
            deleted_column: str | None = None) -> Comparison:
    """Compare source rows (by key) with silver rows on ``columns``; rows with ``deleted_column`` true (mode
    cdc with ``deletes: mark``) count as absent."""
    live = {row[key]: row for row in silver if not (deleted_column and row.get(deleted_column))}
    result = Comparison(len(source), len(live), 0, 0, 0)
    for k in source.keys() | live.keys():
        if k not in live:
            result.missing += 1
        elif k not in source:
            result.extra += 1
        else:
            left = {c: _normal(source[k].get(c)) for c in columns}
            right = {c: _normal(live[k].get(c)) for c in columns}
            if left == right:
                continue
            result.different += 1
        if len(result.examples) < 5:
            result.examples.append(f"{key} {k}: source {source.get(k)} silver {live.get(k)}")
    return result


def compare_with_postgres(dsn: str, table: str, key: str, silver_path: str) -> Comparison:
    """``SELECT * FROM table`` against the silver Delta table at ``silver_path`` (read with delta-rs)."""
    from deltalake import DeltaTable

    names, rows = source_rows(dsn, table, key)
    silver = DeltaTable(silver_path).to_pyarrow_table().to_pylist()
    deleted = "cdc_deleted" if silver and "cdc_deleted" in silver[0] else None
    return compare(rows, silver, names, key, deleted)
