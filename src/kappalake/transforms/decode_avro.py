"""Avro payloads -> ``_raw`` (the reader schema's record, typed), ``_decode_error`` and ``_schema_id``.

Decoded in the JVM by Spark's ``from_avro`` (spark-avro), never row by row in Python. In the Confluent
wire format every record names its writer schema by id (byte 0 = magic 0, bytes 1-4 = the id, big
endian); each known id gets its own ``from_avro(payload, writer schema, avroSchema = reader schema)``
branch, so records written with several versions of a subject are all read with the pipeline's reader
schema (Avro schema resolution: added fields take their default, removed fields are skipped, ints widen).

A record whose id is not in the plan is marked with rule :data:`UNRESOLVED`; the query's batch writer
asks the registry about it (:mod:`kappalake.io.registry.gate`) and restarts the query with the schema, or
dead-letters the record when the registry does not have the id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from kappalake.transforms.decode_json import decode_error

#: Rule of a record whose schema id the plan does not know (resolved by the batch writer, never final).
UNRESOLVED = "schema_id_unresolved"
_PERMISSIVE = {"mode": "PERMISSIVE"}


@dataclass(frozen=True)
class AvroPlan:
    """What the decoder knows: the reader schema and each writer schema (by registry id, or the one
    writer schema of plain Avro). ``labels`` name a writer schema in messages (subject and version)."""

    reader: str
    writers: dict[int, str] = field(default_factory=dict)
    wire: str = "confluent"
    plain_writer: str | None = None
    labels: dict[int, str] = field(default_factory=dict)
    #: Ids whose records are dead-lettered with this reason (a schema of another subject the reader
    #: schema cannot read, or not an Avro schema at all).
    rejected: dict[int, str] = field(default_factory=dict)


def _from_avro(payload: Column, writer: str, reader: str) -> Column:
    from pyspark.sql.avro.functions import from_avro

    return from_avro(payload, writer, {**_PERMISSIVE, "avroSchema": reader})


def schema_id_of(value: Column) -> Column:
    """The 4-byte big-endian schema id after the magic byte, a signed int as Java reads it (null when the
    payload is shorter): a corrupt header with the high bit set gives a negative id, never an overflow."""
    unsigned = F.conv(F.hex(F.substring(value, 2, 4)), 16, 10).cast("long")
    signed = F.when(unsigned >= F.lit(2 ** 31), unsigned - F.lit(2 ** 32)).otherwise(unsigned)
    return F.when(F.length(value) >= 5, signed.cast("int"))


def has_magic_byte(value: Column) -> Column:
    """At least 5 bytes, the first one 0."""
    return (F.length(value) >= 5) & (F.hex(F.substring(value, 1, 1)) == F.lit("00"))


def decode_avro(records: DataFrame, plan: AvroPlan) -> DataFrame:
    """Add ``_raw``, ``_decode_error`` and ``_schema_id`` to ``records`` (a ``value`` binary column)."""
    value = F.col("value")
    if plan.wire == "plain":
        decoded = _from_avro(value, plan.plain_writer or plan.reader, plan.reader)
        error = F.when(value.isNotNull() & _corrupt(plan.reader), decode_error(
            "avro", F.lit("payload does not decode with the writer schema: corrupt or truncated Avro")))
        return (records.withColumn("_raw", decoded)
                .withColumns({"_decode_error": error, "_schema_id": F.lit(None).cast("int")}))

    schema_id = F.col("_schema_id")
    payload = F.expr("substring(value, 6)")
    decoded: Column | None = None
    for known_id, writer in sorted(plan.writers.items()):
        branch = _from_avro(payload, writer, plan.reader)
        decoded = F.when(schema_id == known_id, branch) if decoded is None else decoded.when(
            schema_id == known_id, branch)
    if decoded is None:  # no writer schema known yet: every record waits for the registry
        decoded = F.lit(None).cast(_reader_type(records, plan.reader))
    known = schema_id.isin(list(plan.writers)) if plan.writers else F.lit(False)
    label = F.try_element_at(F.create_map(*[x for i, text in sorted(plan.labels.items()) for x in (F.lit(i), F.lit(text))]),
                         schema_id) if plan.labels else F.lit(None).cast("string")
    id_text = F.concat(F.lit("schema id "), schema_id.cast("string"),
                       F.coalesce(F.concat(F.lit(" ("), label, F.lit(")")), F.lit("")))
    error = (F.when(value.isNull(), F.lit(None))
             .when(~has_magic_byte(value), decode_error("magic_byte", F.concat(
                 F.lit("payload does not start with the Confluent wire format header (magic byte 0 and a 4-byte "
                       "schema id): first byte 0x"), F.coalesce(F.hex(F.substring(value, 1, 1)), F.lit("")),
                 F.lit(", "), F.length(value).cast("string"), F.lit(" bytes"))))
             .when(_rejected_reason(plan).isNotNull(), decode_error("incompatible_schema", _rejected_reason(plan)))
             .when(~known, decode_error(UNRESOLVED, F.concat(id_text, F.lit(" is not known to this query"))))
             .when(_corrupt(plan.reader), decode_error("avro", F.concat(
                 id_text, F.lit(": payload does not decode with this writer schema (corrupt or truncated Avro)")))))
    with_id = records.withColumn("_schema_id", F.when(has_magic_byte(value), schema_id_of(value)))
    return (with_id.withColumn("_raw", F.when(has_magic_byte(value), decoded))
            .withColumn("_decode_error", error))


def _rejected_reason(plan: AvroPlan) -> Column:
    if not plan.rejected:
        return F.lit(None).cast("string")
    reasons = F.create_map(*[x for i, reason in sorted(plan.rejected.items()) for x in (F.lit(i), F.lit(reason))])
    return F.try_element_at(reasons, F.col("_schema_id"))


def _corrupt(reader: str) -> Column:
    """``from_avro`` in PERMISSIVE mode gives a struct of nulls for bytes it cannot decode: a null in a field
    the reader schema does not allow to be null (or, without such fields, every field null) means that."""
    fields = json.loads(reader)["fields"]
    required = [f["name"] for f in fields if not (isinstance(f["type"], list) and "null" in f["type"])]
    raw = F.col("_raw")
    if required:
        return raw.isNull() | reduce(lambda a, b: a | b, [raw.getField(name).isNull() for name in required])
    return raw.isNull() | reduce(lambda a, b: a & b, [raw.getField(f["name"]).isNull() for f in fields])


def _reader_type(records: DataFrame, reader: str) -> str:
    """The Spark type ``from_avro`` gives the reader schema (asked of the JVM without reading data)."""
    probe = records.sparkSession.range(0).select(_from_avro(F.lit(b"").cast("binary"), reader, reader).alias("r"))
    return probe.schema["r"].dataType.simpleString()


def mark_unknown_ids(decoded: DataFrame, known: set[int]) -> DataFrame:
    """For a decoder that does not need the writer schema (Protobuf parses with the pipeline's descriptor):
    a record that decoded but whose schema id is not in ``known`` is marked :data:`UNRESOLVED`, so the
    batch writer resolves it like an Avro id (restart, dead letter, or wait for the registry)."""
    schema_id = F.col("_schema_id")
    unknown = F.col("_decode_error").isNull() & schema_id.isNotNull() & ~schema_id.isin(sorted(known))
    return decoded.withColumn("_decode_error", F.when(unknown, decode_error(UNRESOLVED, F.concat(
        F.lit("schema id "), schema_id.cast("string"), F.lit(" is not known to this query")))).otherwise(
        F.col("_decode_error")))
