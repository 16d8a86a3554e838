"""Streaming appends to Delta with delta-spark's own sink (exactly-once by Delta's txn protocol)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.streaming import StreamingQuery


@dataclass(frozen=True)
class Trigger:
    """``available_now`` drains what is there and stops; otherwise a micro-batch every ``interval``."""

    available_now: bool = False
    interval: str = "5 seconds"

    def as_kwargs(self) -> dict[str, object]:
        return {"availableNow": True} if self.available_now else {"processingTime": self.interval}


def start_delta_append(df: DataFrame, path: str, checkpoint: str, query_name: str, trigger: Trigger,
                       partition_by: Sequence[str] = ()) -> StreamingQuery:
    """Start a streaming append of ``df`` into the Delta table at ``path``."""
    writer = (df.writeStream.format("delta").outputMode("append").queryName(query_name)
              .option("checkpointLocation", checkpoint))
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    return writer.trigger(**trigger.as_kwargs()).start(path)
