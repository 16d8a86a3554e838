"""The ``erasure:`` section of a pipeline: who can be forgotten, and how each layer forgets them.

```yaml
erasure:
  subject_fields: [card_id]      # payload fields that identify a data subject (each also in silver.pii.fields)
  seen_again: drop               # events of a registered subject arriving after the request: drop | keep
  purge_retention: 0 hours       # VACUUM retention of 'kappalake forget --purge'
  control_topic: true            # live jobs read requests from the topic <pipeline>.forget
  clickhouse:                    # per gold view: delete (the subject's rows) | keep; default below
    card_velocity_1m: delete
```

A view grouped by a subject field defaults to ``delete`` (its rows are keyed by the subject's pseudonym);
any other view defaults to ``keep``: its aggregates merely counted the subject and hold no key of it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from kappalake.config.base import Identifier, StrictModel
from kappalake.config.durations import parse_seconds

if TYPE_CHECKING:
    from kappalake.config.models import PipelineConfig

_ZERO = re.compile(r"^\s*0+(\.0*)?\s*[a-z]*\s*$", re.IGNORECASE)


def retention_seconds(text: str) -> float:
    """Seconds of a retention that may be zero ('0 hours'); ValueError when unreadable."""
    if _ZERO.match(text):
        return 0.0
    return parse_seconds(text)


class ErasureConfig(StrictModel):
    """Right to erasure: the subject fields, the policy for subjects seen again, purge and gold settings."""

    subject_fields: list[Identifier] = Field(
        default_factory=list, description="Payload fields identifying a data subject ('kappalake forget "
                                          "<pipeline> --subject FIELD=VALUE'); each must be a silver.pii field.")
    seen_again: Literal["drop", "keep"] = Field(
        default="drop", description="Events of a registered subject produced after the request: drop (counted) "
                                    "or keep (new consent).")
    purge_retention: str = Field(
        default="0 hours", description="VACUUM retention of 'kappalake forget --purge' (0 hours: every file the "
                                       "tables no longer reference goes, and with it time travel to older versions).")
    control_topic: bool = Field(
        default=True, description="Live jobs also read erasure requests from the Kafka topic <pipeline>.forget.")
    clickhouse: dict[Identifier, Literal["delete", "keep"]] = Field(
        default_factory=dict, description="Per gold view: delete the subject's rows, or keep the view as it is. "
                                          "Default: delete for views grouped by a subject field, else keep.")

    @field_validator("purge_retention")
    @classmethod
    def _check_retention(cls, value: str) -> str:
        retention_seconds(value)
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.subject_fields)

    def view_action(self, name: str, group_by: list[str]) -> str:
        """``delete`` or ``keep`` for gold view ``name`` grouped by ``group_by``."""
        if name in self.clickhouse:
            return self.clickhouse[name]
        return "delete" if set(group_by) & set(self.subject_fields) else "keep"

    def subject_of_view(self, group_by: list[str]) -> str | None:
        """The subject field a view is keyed by (the first in group_by), or None."""
        return next((name for name in group_by if name in self.subject_fields), None)


def check_erasure(pipeline: PipelineConfig) -> None:
    """Cross-checks of the ``erasure`` section against the rest of the pipeline (ValueError)."""
    erasure: ErasureConfig = pipeline.erasure
    fields = pipeline.events.schema_
    for name in erasure.subject_fields:
        if name not in fields:
            raise ValueError(f"erasure.subject_fields: {name!r} is not declared in events.schema")
        if name not in pipeline.silver.pii.fields:
            raise ValueError(f"erasure.subject_fields: {name!r} must also be in silver.pii.fields: silver, the late "
                             "events and gold hold a subject only as its pseudonym, which the register matches")
        if pipeline.events.format != "json" and name != pipeline.events.key:
            raise ValueError(f"erasure.subject_fields: {name!r} cannot be found in raw {pipeline.events.format} "
                             "records (bronze, dead letters); with a binary format the subject field must be the "
                             f"record key (events.key, now {pipeline.events.key!r})")
    if len(set(erasure.subject_fields)) != len(erasure.subject_fields):
        raise ValueError("erasure.subject_fields lists a field twice")
    for view_name, action in erasure.clickhouse.items():
        view = pipeline.gold.views.get(view_name)
        if view is None:
            raise ValueError(f"erasure.clickhouse: {view_name!r} is not a gold view of this pipeline "
                             f"(views: {', '.join(pipeline.gold.views) or 'none'})")
        if action == "delete" and erasure.subject_of_view(view.group_by) is None:
            raise ValueError(f"erasure.clickhouse.{view_name}: delete needs a view grouped by a subject field "
                             f"({', '.join(erasure.subject_fields) or 'none configured'}); its rows hold no subject "
                             "key. Use keep (its aggregates merely counted the subject)")


def parse_subject(text: str) -> tuple[str, str]:
    """``FIELD=VALUE`` -> (field, value); ValueError when malformed."""
    field, sep, value = text.partition("=")
    if not sep or not field.strip() or not value:
        raise ValueError(f"--subject {text!r}: expected FIELD=VALUE, e.g. card_id=card-000042")
    return field.strip(), value
