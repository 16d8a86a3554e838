"""Expectations declared per table in the pipeline YAML (silver, gold views).

Example (``silver.expectations``; a bare list is shorthand for ``{expectations: [...]}``)::

    expectations:
      - {name: amount_range, kind: between, column: amount, min: 0, max: 100000}
      - {name: known_currency, kind: in_set, column: currency, values: [USD, EUR]}
      - {name: one_per_id, kind: unique, column: event_id}                       # batch, record
      - {name: not_stale, kind: freshness, column: event_time, max_lag: 15 minutes, on_fail: stop}

Row-level kinds (not_null, in_set, between, regex, sql; unique optionally) quarantine failing rows
or only record them; batch-level kinds (unique, row_count, freshness, or any row kind with
``level: batch``) record a result or, with ``on_fail: stop``, fail the query before writing.

This module must not import :mod:`kappalake.config.models` (that module imports this one).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from kappalake.config.base import Duration, Identifier, StrictModel
from kappalake.config.durations import parse_seconds

Kind = Literal["not_null", "in_set", "between", "regex", "unique", "row_count", "freshness", "sql"]
Level = Literal["row", "batch"]
OnFail = Literal["quarantine", "record", "stop"]
Engine = Literal["profile", "gx_spark"]

ROW_KINDS = frozenset({"not_null", "in_set", "between", "regex", "sql"})
BATCH_ONLY_KINDS = frozenset({"row_count", "freshness"})
_DEFAULT_BATCH = frozenset({"unique", "row_count", "freshness"})

#: Which optional parameters each kind takes (``name``, ``kind``, ``level``, ``on_fail`` always apply).
_PARAMS: dict[str, frozenset[str]] = {
    "not_null": frozenset({"column"}),
    "in_set": frozenset({"column", "values"}),
    "between": frozenset({"column", "min", "max"}),
    "regex": frozenset({"column", "pattern"}),
    "unique": frozenset({"column"}),
    "row_count": frozenset({"min", "max"}),
    "freshness": frozenset({"column", "max_lag"}),
    "sql": frozenset({"expression"}),
}
_OPTIONAL = frozenset({"column", "values", "min", "max", "pattern", "expression", "max_lag"})


class ExpectationConfig(StrictModel):
    """One expectation: a kind with its parameters, the level it applies at and what a failure does."""

    name: Identifier = Field(description="Unique within the table; names the rule in results and dead letters.")
    kind: Kind
    column: Identifier | None = None
    values: list[str | int | float | bool] | None = Field(default=None, min_length=1)
    min: int | float | None = None
    max: int | float | None = None
    pattern: str | None = Field(default=None, description="Java regular expression (Spark rlike), for regex.")
    expression: str | None = Field(default=None, description="Spark SQL boolean expression, true = row passes.")
    max_lag: Duration | None = Field(default=None, description="Freshness: max(column) may lag now by this much.")
    level: Level | None = Field(default=None, description="row: each row; batch: the whole micro-batch.")
    on_fail: OnFail | None = Field(default=None, description="row: quarantine|record; batch: record|stop.")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """Fill ``level`` and ``on_fail`` from the kind so every loaded expectation is explicit."""
        if not isinstance(data, dict) or data.get("kind") not in _PARAMS:
            return data
        level = data.get("level") or ("batch" if data["kind"] in _DEFAULT_BATCH else "row")
        on_fail = data.get("on_fail") or ("quarantine" if level == "row" else "record")
        return {**data, "level": level, "on_fail": on_fail}

    @model_validator(mode="after")
    def _check(self) -> ExpectationConfig:
        where = f"expectation {self.name!r} ({self.kind})"
        allowed = _PARAMS[self.kind]
        extra = sorted(p for p in _OPTIONAL - allowed if getattr(self, p) is not None)
        if extra:
            raise ValueError(f"{where}: unexpected {', '.join(extra)}; a {self.kind} expectation takes "
                             f"{', '.join(sorted(allowed))}")
        missing = sorted(p for p in allowed & {"column", "values", "pattern", "expression", "max_lag"}
                         if getattr(self, p) is None)
        if missing:
            raise ValueError(f"{where}: needs {', '.join(missing)}")
        if "min" in allowed and self.min is None and self.max is None:
            raise ValueError(f"{where}: needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{where}: min ({self.min}) is greater than max ({self.max})")
        if self.kind == "row_count":
            for bound in (self.min, self.max):
                if bound is not None and (isinstance(bound, bool) or not float(bound).is_integer() or bound < 0):
                    raise ValueError(f"{where}: min and max are row counts (whole numbers >= 0), got {bound!r}")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"{where}: pattern {self.pattern!r} is not a valid regular expression: {exc}") \
                    from None
        if self.expression is not None and not self.expression.strip():
            raise ValueError(f"{where}: expression is empty")
        if self.kind in BATCH_ONLY_KINDS and self.level == "row":
            raise ValueError(f"{where}: a {self.kind} expectation judges the whole micro-batch, so its level must "
                             "be batch (drop 'level: row')")
        if self.level == "row" and self.on_fail == "stop":
            raise ValueError(f"{where}: on_fail 'stop' applies to batch-level expectations; a row-level one "
                             "quarantines (default) or records failing rows; set 'level: batch' to stop the query")
        if self.level == "batch" and self.on_fail == "quarantine":
            raise ValueError(f"{where}: on_fail 'quarantine' applies to row-level expectations; a batch-level one "
                             "records (default) or stops the query")
        return self

    @property
    def max_lag_seconds(self) -> float | None:
        return parse_seconds(self.max_lag) if self.max_lag is not None else None

    def describe(self) -> str:
        """A short human form of the rule, for dead-letter messages and reports."""
        if self.kind == "not_null":
            return f"{self.column} is not null"
        if self.kind == "in_set":
            return f"{self.column} in {self.values}"
        if self.kind in ("between", "row_count"):
            subject = self.column if self.kind == "between" else "row count"
            if self.min is not None and self.max is not None:
                return f"{subject} between {self.min} and {self.max}"
            return f"{subject} >= {self.min}" if self.min is not None else f"{subject} <= {self.max}"
        if self.kind == "regex":
            return f"{self.column} matches {self.pattern}"
        if self.kind == "unique":
            return f"{self.column} unique within the batch"
        if self.kind == "freshness":
            return f"max({self.column}) at most {self.max_lag} behind now"
        return str(self.expression)


def _list_shorthand(value: Any) -> Any:
    return {"expectations": value} if isinstance(value, list) else value


class QualityConfig(StrictModel):
    """A table's expectations and where their validation results go."""

    expectations: list[ExpectationConfig] = Field(default_factory=list)
    results_path: str | None = Field(
        default=None, description="Delta table of validation results; default <root>/<pipeline>/quality_results.")
    engine: Engine = Field(
        default="profile",
        description="How batch-level expectations are evaluated. profile: one Spark aggregate per batch, verdicts "
                    "by Great Expectations over that one-row metrics profile (fast). gx_spark: Great Expectations' "
                    "Spark datasource runs its native expectations on the micro-batch DataFrame (several Spark "
                    "jobs per expectation).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return _list_shorthand(data)

    @model_validator(mode="after")
    def _unique_names(self) -> QualityConfig:
        seen: set[str] = set()
        for expectation in self.expectations:
            if expectation.name in seen:
                raise ValueError(f"expectation name {expectation.name!r} is used twice; names must be unique")
            seen.add(expectation.name)
        return self

    @property
    def row_level(self) -> list[ExpectationConfig]:
        return [e for e in self.expectations if e.level == "row"]

    @property
    def batch_level(self) -> list[ExpectationConfig]:
        return [e for e in self.expectations if e.level == "batch"]

    def referenced_columns(self) -> list[tuple[str, str]]:
        """``(expectation name, column)`` for every column-based expectation (to check against the schema)."""
        return [(e.name, e.column) for e in self.expectations if e.column is not None]
