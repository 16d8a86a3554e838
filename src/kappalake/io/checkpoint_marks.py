"""Small records a streaming query keeps beside its checkpoint (local, s3a://, abfss:// alike).

* :class:`EventTimeHighWater`: the highest event time per time column after each batch; batch N reads
  the value left by the latest batch before N, so a replay sees what the first attempt saw.
* :func:`run_generation`: a number fixed when the checkpoint is first used (microseconds since the
  epoch), so every write of this checkpoint's query is told apart from other runs', and newer runs
  (a backfill, a replay from a fresh checkpoint) have higher numbers.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from kappalake.io import hadoopfs

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class EventTimeHighWater:
    """Per-batch high water marks in ``<directory>/<batch>.json``; the last :attr:`KEEP` batches are kept."""

    KEEP = 100

    def __init__(self, spark: SparkSession, directory: str) -> None:
        self.spark = spark
        self.directory = directory
        self._cache: dict[int, dict[str, str]] | None = None

    def _load(self) -> dict[int, dict[str, str]]:
        if self._cache is None:
            self._cache = {}
            for name in hadoopfs.list_names(self.spark, self.directory):
                if name.endswith(".json") and name[:-5].isdigit():
                    text = hadoopfs.read_text(self.spark, f"{self.directory}/{name}")
                    if text:
                        self._cache[int(name[:-5])] = json.loads(text)
        return self._cache

    def before(self, batch_id: int) -> dict[str, str]:
        """The high water (ISO timestamps per time column) left by the latest batch before ``batch_id``."""
        earlier = [b for b in self._load() if b < batch_id]
        return dict(self._load()[max(earlier)]) if earlier else {}

    def record(self, batch_id: int, values: dict[str, str]) -> None:
        cache = self._load()
        hadoopfs.write_text(self.spark, f"{self.directory}/{batch_id}.json", json.dumps(values))
        cache[batch_id] = values
        for old in [b for b in cache if b < batch_id - self.KEEP]:
            hadoopfs.delete(self.spark, f"{self.directory}/{old}.json")
            del cache[old]


def run_generation(spark: SparkSession, checkpoint: str) -> int:
    """The checkpoint's generation: read from ``<checkpoint>/_generation``, written on first use."""
    path = f"{checkpoint}/_generation"
    text = hadoopfs.read_text(spark, path)
    if text and text.strip().isdigit():
        return int(text.strip())
    generation = time.time_ns() // 1000
    hadoopfs.write_text(spark, path, str(generation))
    return generation
