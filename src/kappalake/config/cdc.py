"""Change events from Debezium (``events.format: debezium``): the fields every change carries.

A Debezium record value is an envelope ``{before, after, source, op, ts_ms}`` (with the JSON converter's
``schemas.enable=true`` wrapped as ``{"schema": ..., "payload": {...}}``). A pipeline declares the table's
columns in ``events.schema``; these metadata fields are added to it when the pipeline loads, so views,
expectations and ``events.time`` may name them.
"""

from __future__ import annotations

from typing import Any

#: Metadata of every change: its id (source LSN and record key: the same for a redelivered duplicate, so
#: ``events.id: cdc_id`` dedupes), the operation (r snapshot, c insert, u update, d delete, t tombstone),
#: the source LSN (the change's position in the database log), the commit time and the transaction id.
CDC_FIELDS: dict[str, dict[str, Any]] = {
    "cdc_id": {"type": "string"},
    "cdc_op": {"type": "string", "required": True},
    "cdc_lsn": {"type": "long"},
    "cdc_ts": {"type": "timestamp"},
    "cdc_tx_id": {"type": "long"},
}
#: Operations a change may carry; ``t`` is a Kafka tombstone (null value after a delete).
CDC_OPS = ("r", "c", "u", "d", "t")


def with_cdc_fields(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (the table's declared columns) plus the metadata fields; a declared metadata name is refused."""
    clash = sorted(set(schema) & set(CDC_FIELDS))
    if clash:
        raise ValueError(f"schema: {clash[0]!r} is a field every change carries (format: debezium adds "
                         f"{', '.join(CDC_FIELDS)}); rename the column")
    return {**schema, **CDC_FIELDS}
