"""Gold view enrichment: dimension columns joined onto the events before a view aggregates them.

A view may declare::

    enrich:
      - pipeline: merchants            # the silver table of this pipeline (same target, same storage root)
        key: merchant_id               # event field = dimension key; or {event_field: dimension_key}
        columns: [category, risk_tier] # dimension columns added to the events

The dimension is read as a static Delta DataFrame (the key and the named columns; rows with
``cdc_deleted = true`` left out) and left-joined onto each micro-batch's events, so an event without a
dimension row keeps null enrichment columns. A group key taken from an enrichment column cannot be
null (ClickHouse sorting keys are not Nullable): such events are grouped under the type's default
('' for strings, 0 for numbers, false for booleans), the value a non-Nullable ClickHouse column holds.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import Field, field_validator

from kappalake.config.base import Identifier, StrictModel


class EnrichConfig(StrictModel):
    """One dimension join of a gold view. (The join field is ``key``, not ``on``: YAML 1.1 reads a bare ``on``
    as ``true``.)"""

    pipeline: Identifier = Field(description="The pipeline whose silver table is the dimension (same target).")
    key: Identifier | dict[Identifier, Identifier] = Field(
        description="Event field equal to the dimension key: a name used on both sides, or {event_field: "
                    "dimension_key}.")
    columns: list[Identifier] = Field(min_length=1, description="Dimension columns added to the events.")

    @field_validator("key")
    @classmethod
    def _one_pair(cls, value: Any) -> Any:
        if isinstance(value, dict) and len(value) != 1:
            raise ValueError("key: give one event field, or one {event_field: dimension_key} pair")
        return value

    @field_validator("columns")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("columns: lists a column twice")
        return value

    @property
    def event_field(self) -> str:
        """The event field holding the dimension key."""
        return self.key if isinstance(self.key, str) else next(iter(self.key))

    @property
    def dimension_key(self) -> str:
        """The key column of the dimension table."""
        return self.key if isinstance(self.key, str) else next(iter(self.key.values()))


def enrichment_columns(enrich: list[EnrichConfig]) -> list[str]:
    """The columns ``enrich`` adds to the events, in order."""
    return [column for entry in enrich for column in entry.columns]


def check_enrichment(where: str, enrich: list[EnrichConfig], fields: Collection[str]) -> set[str]:
    """Validate a view's ``enrich`` against the event fields; return the columns it adds."""
    added: set[str] = set()
    for entry in enrich:
        at = f"{where}.enrich: pipeline {entry.pipeline!r}"
        if entry.event_field not in fields:
            raise ValueError(f"{at}: key: {entry.event_field!r} is not declared in events.schema")
        for column in entry.columns:
            if column in fields:
                raise ValueError(f"{at}: columns: {column!r} is also an event field; the enriched events would "
                                 "have it twice (rename the dimension column or leave it out)")
            if column in added:
                raise ValueError(f"{at}: columns: {column!r} is already added by another enrich entry")
            added.add(column)
    return added
