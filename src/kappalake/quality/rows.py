"""Row-level expectations as Spark column expressions: split a micro-batch into valid and quarantined rows.

Pure DataFrame -> DataFrame functions, no I/O. Each check is a boolean Column, true when the row
passes. Null semantics follow SQL CHECK constraints and Great Expectations' column map expectations
(which leave nulls out of the unexpected count): ``not_null`` fails a null, every other kind passes
it -- ``in_set``, ``between``, ``regex``, ``unique`` ignore a null value, and a ``sql`` expression
that evaluates to NULL counts as passing. Combine with ``not_null`` to reject nulls too.

``regex`` uses Spark's ``rlike`` (Java regular expressions, a match anywhere unless anchored with
``^...$``). Row-level ``unique`` fails every row whose value occurs more than once in the batch.

For silver, :func:`silver_view` gives the silver columns of a parsed batch plus the record (so
quarantined rows keep their Kafka bytes without a join) and :func:`dead_letters` turns it into every
dead letter of the batch (parse failures and quarantined rows) in one pass.
"""

from __future__ import annotations

from itertools import chain

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from kappalake.config.models import EventsConfig
from kappalake.quality.config import ExpectationConfig, QualityConfig
from kappalake.transforms.dead_letter import to_dead_letter
from kappalake.transforms.parse import field_column
from kappalake.transforms.records import RECORD_COLUMNS
from kappalake.transforms.silver import to_silver

#: The column quarantined rows carry: every row-level expectation the row failed.
FAILED = "failed_expectations"
#: Dead-letter ``error_class`` (and ``failed_rules`` prefix) of quarantined rows.
QUALITY_RULE = "quality"
#: In a :func:`silver_view` of parsed records: true for a record that passed parsing (empty ``_errors``).
VALID = "_dq_valid"
#: Columns a :func:`silver_view` adds to silver's: the record and its parse errors (for the dead-letter
#: table) and ``VALID``.
CARRIED = (*(f"_dq_{c}" for c in RECORD_COLUMNS), "_dq_errors", VALID)


def check(expectation: ExpectationConfig, where: Column | None = None) -> Column:
    """The expression that is true when a row passes ``expectation`` (row kinds and ``unique``).

    ``where`` limits ``unique`` to the rows it selects (a value repeated only outside them passes);
    the other kinds judge each row alone."""
    kind = expectation.kind
    if kind == "sql":
        return F.coalesce(F.expr(str(expectation.expression)), F.lit(True))
    column = F.col(str(expectation.column))
    if kind == "not_null":
        return column.isNotNull()
    if kind == "in_set":
        passes = column.isin(list(expectation.values or []))
    elif kind == "between":
        passes = F.lit(True)
        if expectation.min is not None:
            passes = passes & (column >= F.lit(expectation.min))
        if expectation.max is not None:
            passes = passes & (column <= F.lit(expectation.max))
    elif kind == "regex":
        passes = column.cast("string").rlike(str(expectation.pattern))
    elif kind == "unique":
        counted = F.lit(1) if where is None else F.when(where, F.lit(1))
        passes = F.count(counted).over(Window.partitionBy(column)) <= 1
    else:
        raise ValueError(f"expectation {expectation.name!r}: a {kind} expectation has no row-level check")
    return column.isNull() | F.coalesce(passes, F.lit(False))


def row_checks(config: QualityConfig, where: Column | None = None) -> list[tuple[str, Column]]:
    """``(name, passes)`` for every row-level expectation of ``config``, in declaration order."""
    return [(e.name, check(e, where)) for e in config.row_level]


def flag_rows(df: DataFrame, config: QualityConfig, where: Column | None = None) -> DataFrame:
    """``df`` plus ``failed_expectations`` (array<string>): the row-level expectations each row failed
    (``where``: as in :func:`check`)."""
    checks = row_checks(config, where)
    if not checks:
        return df.withColumn(FAILED, F.array().cast("array<string>"))
    names = F.array(*[F.when(~passes, F.lit(name)) for name, passes in checks])
    return df.withColumn(FAILED, F.array_compact(names))


def quarantines(config: QualityConfig) -> Column:
    """True for a flagged row that failed at least one expectation with ``on_fail: quarantine``."""
    names = [e.name for e in config.row_level if e.on_fail == "quarantine"]
    if not names:
        return F.lit(False)
    return F.exists(F.col(FAILED), lambda name: name.isin(names))


def split_rows(df: DataFrame, config: QualityConfig) -> tuple[DataFrame, DataFrame]:
    """(valid rows with ``df``'s columns, quarantined rows plus ``failed_expectations``).

    The failed-names array is computed once (:func:`flag_rows`) and the result filtered twice; a
    row that failed only ``on_fail: record`` expectations stays valid. Persist ``df`` (or the
    flagged frame) when both outputs are written.
    """
    flagged = flag_rows(df, config)
    bad = quarantines(config)
    return flagged.where(~bad).drop(FAILED), flagged.where(bad)


def silver_view(parsed: DataFrame, events: EventsConfig) -> DataFrame:
    """What expectations see: ``to_silver``'s columns (declared fields, then lineage) plus ``CARRIED``:
    the record columns the dead-letter table needs (``_dq_key``, ``_dq_value``, ...) and, when
    ``parsed`` has ``_errors``, ``_dq_errors`` and ``_dq_valid``. So quarantined rows need no join
    back to the records, and the view of a whole parsed batch can be profiled in the one aggregate
    that also counts valid and rejected records. Drop ``CARRIED`` before writing silver."""
    silver = to_silver(parsed, events)
    columns = [*(F.col(field_column(n)).alias(n) for n in events.schema_), F.col("kafka_timestamp"),
               F.col("topic").alias("source_topic"), F.col("partition").alias("source_partition"),
               F.col("offset").alias("source_offset"), *(F.col(c).alias(f"_dq_{c}") for c in RECORD_COLUMNS)]
    if "_errors" in parsed.columns:
        columns += [F.col("_errors").alias("_dq_errors"), (F.size("_errors") == 0).alias(VALID)]
    view = parsed.select(*columns)
    if view.columns[: len(silver.columns)] != silver.columns:  # to_silver changed: follow it here
        raise AssertionError(f"silver_view is out of date with to_silver: {silver.columns}")
    return view


def _quality_errors(config: QualityConfig) -> Column:
    """``failed_expectations`` as dead-letter reasons (``_errors`` entries: rule, field, message)."""
    messages = F.create_map(*chain.from_iterable(
        (F.lit(e.name), F.lit(f"expectation {e.name} failed: {e.describe()}")) for e in config.row_level))
    return F.transform(FAILED, lambda name: F.struct(
        F.lit(QUALITY_RULE).alias("rule"), name.alias("field"), F.element_at(messages, name).alias("message")))


def _record(errors: Column) -> list[Column]:
    return [*(F.col(f"_dq_{c}").alias(c) for c in RECORD_COLUMNS), errors.alias("_errors")]


def quarantine_dead_letters(quarantined: DataFrame, config: QualityConfig, pipeline: str, version: str,
                            layer: str = "silver") -> DataFrame:
    """Dead-letter rows for the quarantined rows of a :func:`silver_view`, with the original key and value.

    Each failed expectation becomes one reason: ``error_class`` ``quality``, ``failed_rules``
    ``quality:<name>``, ``error_message`` ``expectation <name> failed: <rule>``.
    """
    return to_dead_letter(quarantined.select(*_record(_quality_errors(config))), pipeline, version, layer)


def dead_letters(view: DataFrame, config: QualityConfig, pipeline: str, version: str,
                 layer: str = "silver") -> DataFrame:
    """Every dead letter of a :func:`silver_view` of a whole parsed batch, in one pass: records that
    failed parsing (their parse reasons) and valid records quarantined by expectations (as in
    :func:`quarantine_dead_letters`). Replaces ``to_dead_letter(rejected)`` plus a union."""
    valid = F.col(VALID)
    flagged = flag_rows(view, config, where=valid)
    dead = flagged.where(~valid | quarantines(config))
    errors = F.when(valid, _quality_errors(config)).otherwise(F.col("_dq_errors"))
    return to_dead_letter(dead.select(*_record(errors)), pipeline, version, layer)
