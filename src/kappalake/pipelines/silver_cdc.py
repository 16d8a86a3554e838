"""Silver in mode ``cdc``: apply a micro-batch of Debezium changes to the current-state table (and the SCD
type 2 history table when ``silver.history``), exactly once per batch id.

Rows arrive validated and pseudonymised, one per change, with the table's columns, the change metadata
(``cdc_op``, ``cdc_lsn``, ``cdc_ts``, ``cdc_tx_id``) and the Kafka lineage; columns the source table gained
since the pipeline was declared are added by :func:`~kappalake.transforms.decode_debezium.added_columns`
before this step. Ordering, deletes and redelivery are :mod:`kappalake.io.delta.cdc_apply`'s job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kappalake.io.delta.cdc_apply import apply_changes
from kappalake.io.delta.scd2 import apply_history
from kappalake.runtime.context import RunContext

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def history_path(ctx: RunContext) -> str:
    """The SCD type 2 table of a cdc pipeline, next to its silver table."""
    return f"{ctx.table_path('silver')}_history"


def deletes_path(ctx: RunContext) -> str:
    """The LSN of every applied delete (mode cdc, ``deletes: delete``), so an older redelivered change of a
    deleted key cannot bring it back."""
    return f"{ctx.table_path('silver')}_deletes"


def apply_cdc_batch(changes: DataFrame, ctx: RunContext, app_id: str, batch_id: int) -> None:
    """MERGE one batch of changes into silver (and its history), idempotent per (app_id, batch_id)."""
    silver = ctx.pipeline.silver
    assert silver.merge_key
    changes = changes.persist()  # read by every MERGE below: derive (and parse added columns) once
    try:
        apply_changes(changes, ctx.table_path("silver"), silver.merge_key, app_id, batch_id,
                      deletes=silver.deletes, tombstones_path=deletes_path(ctx))
        if silver.history:
            apply_history(changes, history_path(ctx), silver.merge_key, app_id, batch_id)
    finally:
        changes.unpersist()
