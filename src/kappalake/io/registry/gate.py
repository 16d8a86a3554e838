"""Resolve the schema ids a query did not know when it started, inside its batch writer.

A record whose id the decoding plan lacks is marked ``schema_id_unresolved`` by the decoder. Before the
batch writes anything, :meth:`SchemaGate.resolve` asks the registry about each such id:

- the registry has it: :class:`SchemaChanged` is raised; the runner restarts the query, which re-runs the
  uncommitted batch with the new writer schema in its plan (nothing was written, nothing is lost);
- the registry answers that the id does not exist: those records become dead letters with rule
  ``unknown_schema_id`` (bad input, the rest of the batch goes on);
- the registry does not answer: the batch waits and retries, logging and publishing a status, until it
  answers or the job is stopped. Such a record is never dead-lettered as malformed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from kappalake.errors import KappalakeError
from kappalake.io.registry.client import RegistrySchemas, RegistryUnavailable, SchemaNotFound
from kappalake.runtime.context import RunContext
from kappalake.transforms.decode_avro import UNRESOLVED

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


class SchemaChanged(KappalakeError):
    """A batch holds records of a writer schema the query's plan lacks; the runner restarts the query."""


class SchemaGate:
    """Per query: the registry, the ids found missing from it, and what to do while it is unreachable."""

    def __init__(self, schemas: RegistrySchemas, query_name: str, retry_seconds: float,
                 stopping: Callable[[], bool] = lambda: False,
                 on_wait: Callable[[str | None], None] = lambda _: None, schema_type: str = "AVRO") -> None:
        self.schemas = schemas
        self.schema_type = schema_type
        self.query_name = query_name
        self.retry_seconds = retry_seconds
        self.stopping = stopping
        self.on_wait = on_wait
        #: Ids that will not decode, with the reason their records are dead-lettered.
        self.missing: dict[int, str] = {}

    def resolve(self, batch: DataFrame, batch_id: int) -> DataFrame:
        """``batch`` (parsed, with ``_errors`` and ``_schema_id``) with unresolved ids settled; raises
        SchemaChanged when the registry has a schema for one of them."""
        unresolved = F.coalesce(F.get(F.col("_errors"), 0)["rule"] == F.lit(UNRESOLVED), F.lit(False))
        ids = sorted(int(r[0]) for r in batch.where(unresolved).select("_schema_id").distinct().collect())
        if not ids:
            return batch
        new = [i for i in ids if i not in self.missing and self._registered(i, batch_id)]
        if new:
            raise SchemaChanged(f"{self.query_name} batch {batch_id}: records of writer schema id(s) "
                                f"{', '.join(map(str, new))} arrived; restarting the query with them")
        reasons = F.create_map(*[x for i in ids for x in (F.lit(i), F.lit(self.missing[i]))])
        reason = F.array(F.struct(F.lit("unknown_schema_id").alias("rule"), F.lit(None).cast("string").alias("field"),
                                  F.try_element_at(reasons, F.col("_schema_id")).alias("message")))
        return batch.withColumn("_errors", F.when(unresolved, reason).otherwise(F.col("_errors")))

    def _registered(self, schema_id: int, batch_id: int) -> bool:
        """True when the registry has ``schema_id``; False when it says it has not. Waits while it is
        unreachable."""
        waited = 0.0
        while True:
            try:
                found = self.schemas.get(schema_id)
                if found.schema_type != self.schema_type:
                    self.missing[schema_id] = (f"schema id {schema_id} ({found.label}) is a {found.schema_type} "
                                               f"schema, not {self.schema_type}")
                    return False
                if waited:
                    log.warning("%s batch %d: schema registry answers again after %.0f s; schema id %d found",
                                self.query_name, batch_id, waited, schema_id)
                    self.on_wait(None)
                return True
            except SchemaNotFound:
                self.missing[schema_id] = (f"schema id {schema_id} is not registered in the schema registry "
                                           f"{self.schemas.url}")
                self.on_wait(None)
                log.warning("%s batch %d: schema id %d is not registered; its records go to the dead-letter "
                            "table", self.query_name, batch_id, schema_id)
                return False
            except RegistryUnavailable as exc:
                status = (f"waiting for the schema registry: batch {batch_id} holds records of schema id "
                          f"{schema_id}, not cached, and {exc}; retrying every {self.retry_seconds:g} s")
                self.on_wait(status)
                log.warning("%s: %s", self.query_name, status)
                if self.stopping():
                    raise KappalakeError(f"{self.query_name}: stopped while {status}") from None
                time.sleep(self.retry_seconds)
                waited += self.retry_seconds


def schema_gate(ctx: RunContext, schemas: RegistrySchemas | None, query_name: str) -> SchemaGate | None:
    """The gate of a query that decodes the Confluent wire format (None otherwise): it waits on the stop
    signal, and publishes its waiting status in the layer's run record (``kappalake status``)."""
    if schemas is None:
        return None
    from kappalake.ops.runinfo import write_run_record
    from kappalake.ops.stop_signals import stop_requested

    layer = query_name.rsplit(".", 1)[-1]
    registry = ctx.target.schema_registry
    return SchemaGate(schemas, query_name, registry.retry_seconds if registry else 5.0, stopping=stop_requested,
                      on_wait=lambda status: write_run_record(ctx.runs_dir, layer, waiting=status),
                      schema_type=ctx.pipeline.events.format.upper())
