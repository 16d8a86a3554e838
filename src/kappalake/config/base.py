"""Shared pieces of the configuration models: strict models, identifiers and durations."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from kappalake.config.durations import to_spark_interval

IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _duration(value: Any) -> str:
    return to_spark_interval(str(value))


#: A duration written like "10 minutes", normalised to Spark's interval form.
Duration = Annotated[str, BeforeValidator(_duration)]
#: A column or view name: letters, digits and underscores, not starting with a digit.
Identifier = Annotated[str, Field(pattern=IDENT)]


class StrictModel(BaseModel):
    """Frozen model that rejects unknown keys, so a typo fails loudly instead of being ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
