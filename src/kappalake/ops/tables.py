"""Cheap facts about Delta tables without Spark (delta-rs): version and row count from file stats."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableStats:
    version: int
    rows: int
    files: int


def delta_table_stats(path: str) -> TableStats | None:
    """Version, row count and file count of the Delta table at ``path``; None if there is none."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(path)
    except (TableNotFoundError, OSError, ValueError):
        return None
    actions = table.get_add_actions(flatten=True)
    import pyarrow as pa

    actions_table = pa.table(actions) if not isinstance(actions, pa.Table) else actions
    rows = actions_table.column("num_records").to_pylist() if "num_records" in actions_table.column_names else []
    return TableStats(version=table.version(), rows=int(sum(r or 0 for r in rows)), files=actions_table.num_rows)
