"""The dead-letter queue: list rejected records, re-publish selected ones to their source topic after a fix."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa

from kappalake.errors import KappalakeError
from kappalake.io.delta.local import open_table, query
from kappalake.io.kafka.producer import EventProducer
from kappalake.runtime.context import RunContext

REPLAY_HEADER = "kappalake.replay-of"
_LIST_COLUMNS = ("source_topic", "source_partition", "source_offset", "error_class", "error_message",
                 "failed_at", "replayed_at", "value")


def _predicate(where: str | None, include_replayed: bool) -> str:
    clauses = [] if include_replayed else ["replayed_at IS NULL"]
    if where:
        clauses.append(f"({where})")
    return " AND ".join(clauses) or "TRUE"


def list_dead_letters(ctx: RunContext, where: str | None = None, include_replayed: bool = True,
                      limit: int = 50) -> pa.Table:
    """Dead-lettered records of the pipeline, newest first."""
    sql = (f"SELECT {', '.join(_LIST_COLUMNS)} FROM dlq WHERE {_predicate(where, include_replayed)} "
           f"ORDER BY failed_at DESC, source_offset DESC LIMIT {int(limit)}")
    return query(ctx.table_path("dead_letter"), "dead-letter", sql, name="dlq")


@dataclass(frozen=True)
class ReplaySummary:
    selected: int
    published: int
    marked: int


def replay_dead_letters(ctx: RunContext, where: str | None = None, dry_run: bool = False) -> ReplaySummary:
    """Re-publish not-yet-replayed dead letters matching ``where`` to their source topic (original key and
    value, header ``kappalake.replay-of``), then mark them replayed. Silver dedupes on the event id, so a
    replay interrupted between publishing and marking is harmless to rerun."""
    path = ctx.table_path("dead_letter")
    selected = query(path, "dead-letter", "SELECT key, value, source_topic, source_partition, source_offset "
                     f"FROM dlq WHERE {_predicate(where, include_replayed=False)}", name="dlq")
    if dry_run or selected.num_rows == 0:
        return ReplaySummary(selected.num_rows, 0, 0)
    producer = EventProducer(ctx.bootstrap_servers(), ctx.kafka_options)
    coordinates: dict[tuple[str, int], list[int]] = defaultdict(list)
    for row in selected.to_pylist():
        origin = f"{row['source_topic']}/{row['source_partition']}/{row['source_offset']}"
        producer.send(row["source_topic"], row["key"], row["value"], headers=[(REPLAY_HEADER, origin.encode())])
        coordinates[(row["source_topic"], row["source_partition"])].append(row["source_offset"])
    report = producer.flush()
    if report.failed:
        raise KappalakeError(f"{report.failed} dead letters could not be re-published ({'; '.join(report.errors)});"
                             " none were marked replayed")
    table = open_table(path, "dead-letter")
    marked = 0
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    for (topic, partition), offsets in coordinates.items():
        for start in range(0, len(offsets), 1000):
            chunk = offsets[start:start + 1000]
            escaped_topic = topic.replace("'", "''")
            result = table.update(
                updates={"replayed_at": f"CAST('{now}' AS TIMESTAMP)"},
                predicate=(f"replayed_at IS NULL AND source_topic = '{escaped_topic}' AND "
                           f"source_partition = {int(partition)} AND source_offset IN "
                           f"({', '.join(str(int(o)) for o in chunk)})"))
            marked += int(result.get("num_updated_rows", 0))
    return ReplaySummary(selected.num_rows, report.delivered, marked)
