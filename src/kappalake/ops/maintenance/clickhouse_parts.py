"""ClickHouse part maintenance of a gold table.

Each micro-batch inserts one part per table; the server merges them in the background. ``kappalake
maintain`` adds two things a long-running 1-second-trigger job needs:

* a day partition the watermark has closed (no on-time window can change it any more) is merged into one
  part with ``OPTIMIZE ... PARTITION ... FINAL``: a ``FINAL`` read of it then does no merge work. Only closed
  days: a FINAL merge of the open day would be redone at every run and compete with the inserts;
* an open partition with more than ``max_parts`` active parts (merges fall behind) gets one ``OPTIMIZE``
  without FINAL, a merge step the server would otherwise schedule later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kappalake.io.clickhouse.client import ClickHouse


@dataclass(frozen=True)
class Partition:
    partition_id: str
    parts: int
    rows: int
    last_window_end: datetime | None


def partitions(ch: ClickHouse, table: str) -> list[Partition]:
    """Active parts, rows and the latest window end per partition of ``table`` (empty if no table)."""
    parts = ch.rows("SELECT partition_id, count(), sum(rows) FROM system.parts WHERE database = currentDatabase() "
                    "AND table = {t:String} AND active GROUP BY partition_id ORDER BY partition_id", {"t": table})
    if not parts:
        return []
    ends = dict(ch.rows(f"SELECT _partition_id, max(window_end) FROM `{table}` GROUP BY _partition_id"))
    return [Partition(str(pid), int(count), int(rows), _naive_utc(ends.get(pid))) for pid, count, rows in parts]


def merge_parts(ch: ClickHouse, table: str, closed_before: datetime, max_parts: int,
                final_closed: bool = True) -> list[str]:
    """Merge ``table``'s partitions as the module says; a partition is closed when its last window ends
    before ``closed_before`` (naive UTC) and it is not the newest. Returns the statements run."""
    statements = plan_merges(table, partitions(ch, table), closed_before, max_parts, final_closed)
    for statement in statements:
        ch.command(statement)
    return statements


def plan_merges(table: str, found: list[Partition], closed_before: datetime, max_parts: int,
                final_closed: bool = True) -> list[str]:
    """The OPTIMIZE statements :func:`merge_parts` runs for partitions ``found``."""
    newest = max((p.partition_id for p in found), default=None)
    statements = []
    for partition in found:
        closed = (partition.partition_id != newest and partition.last_window_end is not None
                  and partition.last_window_end < closed_before)
        if closed and final_closed and partition.parts > 1:
            statements.append(f"OPTIMIZE TABLE `{table}` PARTITION ID '{partition.partition_id}' FINAL")
        elif not closed and partition.parts > max_parts:
            statements.append(f"OPTIMIZE TABLE `{table}` PARTITION ID '{partition.partition_id}'")
    return statements


def active_parts(ch: ClickHouse, table: str) -> int:
    """Active parts of ``table`` (all partitions)."""
    return sum(p.parts for p in partitions(ch, table)) if table_exists(ch, table) else 0


def table_exists(ch: ClickHouse, table: str) -> bool:
    return bool(ch.rows("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
                        {"t": table})[0][0])


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    from datetime import timezone

    return value.astimezone(timezone.utc).replace(tzinfo=None)
