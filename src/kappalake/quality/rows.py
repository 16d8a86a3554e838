"""Row-level expectations as Spark column expressions: split a micro-batch into valid and quarantined rows.

Pure DataFrame -> DataFrame functions, no I/O. Each check is a boolean Column, true when the row
passes. Null semantics follow SQL CHECK constraints and Great Expectations' column map expectations
(which leave nulls out of the unexpected count): ``not_null`` fails a null, every other kind passes
it -- ``in_set``, ``between``, ``regex``, ``unique`` ignore a null value, and a ``sql`` expression
that evaluates to NULL counts as passing. Combine with ``not_null`` to reject nulls too.

``regex`` uses Spark's ``rlike`` (Java regular expressions, a match anywhere unless anchored with
``^...$``). Row-level ``unique`` fails every row whose value occurs more than once in the batch.
"""

from __future__ import annotations

from itertools import chain

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from kappalake.quality.config import ExpectationConfig, QualityConfig
from kappalake.transforms.dead_letter import to_dead_letter

#: The column quarantined rows carry: every row-level expectation the row failed.
FAILED = "failed_expectations"
#: Dead-letter ``error_class`` (and ``failed_rules`` prefix) of quarantined rows.
QUALITY_RULE = "quality"
LINEAGE = ("source_topic", "source_partition", "source_offset")


def check(expectation: ExpectationConfig) -> Column:
    """The expression that is true when a row passes ``expectation`` (row kinds and ``unique``)."""
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
        passes = F.count(F.lit(1)).over(Window.partitionBy(column)) == 1
    else:
        raise ValueError(f"expectation {expectation.name!r}: a {kind} expectation has no row-level check")
    return column.isNull() | F.coalesce(passes, F.lit(False))


def row_checks(config: QualityConfig) -> list[tuple[str, Column]]:
    """``(name, passes)`` for every row-level expectation of ``config``, in declaration order."""
    return [(e.name, check(e)) for e in config.row_level]


def flag_rows(df: DataFrame, config: QualityConfig) -> DataFrame:
    """``df`` plus ``failed_expectations`` (array<string>): the row-level expectations each row failed."""
    checks = row_checks(config)
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


def quarantine_dead_letters(quarantined: DataFrame, records: DataFrame, config: QualityConfig, pipeline: str,
                            version: str, layer: str = "silver") -> DataFrame:
    """Dead-letter rows for quarantined rows, with the original Kafka key and value bytes.

    ``quarantined`` is the silver-shaped output of :func:`split_rows` (lineage columns
    ``source_topic``/``source_partition``/``source_offset``); ``records`` the batch's records
    (``key, value, topic, partition, offset, kafka_timestamp``), joined back on the offset. Each
    failed expectation becomes one reason: ``error_class`` ``quality``, ``failed_rules``
    ``quality:<name>``, ``error_message`` ``expectation <name> failed: <rule>``.
    """
    messages = F.create_map(*chain.from_iterable(
        (F.lit(e.name), F.lit(f"expectation {e.name} failed: {e.describe()}")) for e in config.row_level))
    keys = quarantined.select(*[F.col(c).alias(f"_q_{c}") for c in LINEAGE], F.col(FAILED).alias("_q_failed"))
    condition = ((F.col("topic") == F.col("_q_source_topic")) & (F.col("partition") == F.col("_q_source_partition"))
                 & (F.col("offset") == F.col("_q_source_offset")))
    errors = F.transform("_q_failed", lambda name: F.struct(
        F.lit(QUALITY_RULE).alias("rule"), name.alias("field"), F.element_at(messages, name).alias("message")))
    joined = records.join(F.broadcast(keys), condition, "inner").withColumn("_errors", errors)
    return to_dead_letter(joined, pipeline, version, layer)
