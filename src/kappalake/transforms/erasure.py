"""Find and drop the records of data subjects in the erasure register (pure DataFrame in/out).

A record belongs to a registered subject when the HMAC of a subject field's value equals a register row's
``subject_hmac`` for that field. The value is read from the raw record: the record key when the field is the
key the producer uses (``events.key``), else (or when the key is null) the field of the JSON payload. Silver
rows, late events and gold hold the field already pseudonymised, so they compare the column itself.

``seen_again: keep`` keeps a registered subject's records produced after the request (their Kafka timestamp
is later than ``requested_at``): new consent.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from kappalake.config.erasure import ErasureConfig
from kappalake.config.models import EventsConfig
from kappalake.transforms.pii import hmac_sha256

#: Columns of the erasure register table.
REGISTER_SCHEMA = ("request_id string, subject_field string, subject_hmac string, requested_at timestamp, "
                   "reason string, source string, silver_done_at timestamp, dead_letter_done_at timestamp, "
                   "late_events_done_at timestamp, bronze_done_at timestamp, clickhouse_done_at timestamp, "
                   "purged_at timestamp")
ERASED = "_erased"


def subject_value(field: str, events: EventsConfig, key: str = "key", value: str = "value") -> Column:
    """The raw value of subject ``field`` of a record with columns ``key`` and ``value`` (binary)."""
    candidates = []
    if field == events.key:
        candidates.append(F.col(key).cast("string"))
    if events.format == "json":
        candidates.append(F.get_json_object(F.col(value).cast("string"), f"$.{field}"))
    if not candidates:
        raise ValueError(f"subject field {field!r} can be read neither from the record key nor a JSON payload")
    return F.coalesce(*candidates) if len(candidates) > 1 else candidates[0]


def subjects(register: DataFrame, field: str) -> DataFrame:
    """One row per registered pseudonym of ``field``: (``_subject``, ``_requested_at`` = the first request)."""
    return (register.where(F.col("subject_field") == F.lit(field))
            .groupBy(F.col("subject_hmac").alias("_subject"))
            .agg(F.min("requested_at").alias("_requested_at")))


def mark_erased(records: DataFrame, register: DataFrame, erasure: ErasureConfig, events: EventsConfig,
                hmac_key: bytes, time_column: str = "kafka_timestamp", key: str = "key",
                value: str = "value") -> DataFrame:
    """``records`` with a boolean column ``_erased``: the record belongs to a registered subject (and, with
    ``seen_again: keep``, was produced before the request). ``register`` may be static or collected rows;
    each subject field is matched by a left equi-join on its pseudonym (the register side is small)."""
    flags = []
    out = records
    for index, field in enumerate(erasure.subject_fields):
        pseudonym = f"_erasure_hmac_{index}"
        right = subjects(register, field).withColumnsRenamed(
            {"_subject": f"_erasure_subject_{index}", "_requested_at": f"_erasure_at_{index}"})
        out = out.withColumn(pseudonym, hmac_sha256(subject_value(field, events, key, value), hmac_key))
        out = out.join(F.broadcast(right), F.col(pseudonym) == F.col(f"_erasure_subject_{index}"), "left")
        matched = F.col(f"_erasure_subject_{index}").isNotNull()
        if erasure.seen_again == "keep":
            matched = matched & (F.col(time_column) <= F.col(f"_erasure_at_{index}"))
        flags.append(matched)
        out = out.withColumn(f"_erasure_flag_{index}", matched).drop(
            pseudonym, f"_erasure_subject_{index}", f"_erasure_at_{index}")
    if not flags:
        return records.withColumn(ERASED, F.lit(False))
    names = [f"_erasure_flag_{i}" for i in range(len(flags))]
    combined = F.greatest(*[F.col(n) for n in names]) if len(names) > 1 else F.col(names[0])
    return out.withColumn(ERASED, F.coalesce(combined, F.lit(False))).drop(*names)


def drop_erased(records: DataFrame, register: DataFrame, erasure: ErasureConfig, events: EventsConfig,
                hmac_key: bytes, time_column: str = "kafka_timestamp", observe: str | None = None) -> DataFrame:
    """``records`` without those of registered subjects. ``observe`` names an observed metric
    (``erased_rows``) the streaming query reports per batch in its progress."""
    if not erasure.enabled:
        return records
    marked = mark_erased(records, register, erasure, events, hmac_key, time_column)
    if observe:
        marked = marked.observe(observe, F.sum(F.col(ERASED).cast("long")).alias("erased_rows"))
    return marked.where(~F.col(ERASED)).drop(ERASED)
