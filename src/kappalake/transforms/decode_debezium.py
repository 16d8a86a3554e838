"""Debezium change events (JSON converter, with or without schemas) -> ``_raw`` and ``_decode_error``.

A change's value is the envelope ``{before, after, source, op, ts_ms}``; with ``schemas.enable=true`` it is
``{"schema": ..., "payload": <envelope>}``. The row image is ``after`` for snapshot reads, inserts and
updates and ``before`` for deletes; a Kafka tombstone (null value after a delete) becomes op ``t`` with
the key columns from the record key. ``_raw`` holds the declared columns as JSON text (cast and checked by
:mod:`~kappalake.transforms.parse`) plus the change metadata of :data:`~kappalake.config.cdc.CDC_FIELDS`:
``cdc_id`` (LSN and record key), ``cdc_op``, ``cdc_lsn`` (``source.lsn``), ``cdc_ts`` (``source.ts_ms``, the commit time) and
``cdc_tx_id`` (``source.txId``).

:func:`added_columns` finds columns the source table gained (``ALTER TABLE ... ADD COLUMN``) that the
pipeline does not declare, typed from the envelope's Connect schema when it has one, so silver can add them.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (ArrayType, IntegerType, LongType, MapType, StringType, StructField,
                               StructType)

from kappalake.config.cdc import CDC_FIELDS
from kappalake.config.models import EventsConfig
from kappalake.transforms.decode_json import CORRUPT, decode_error

TOMBSTONE = "_tombstone"
_TEXT_MAP = MapType(StringType(), StringType())
_SOURCE = StructType([StructField("lsn", LongType()), StructField("txId", LongType()),
                      StructField("ts_ms", LongType())])
_ENVELOPE_FIELDS = [StructField("before", _TEXT_MAP), StructField("after", _TEXT_MAP),
                    StructField("source", _SOURCE), StructField("op", StringType()), StructField("ts_ms", LongType())]
_ENVELOPE = StructType(_ENVELOPE_FIELDS)
_WRAPPER = StructType([
    StructField("e", StructType([StructField("payload", _ENVELOPE), *_ENVELOPE_FIELDS])),
    StructField("z", IntegerType()), StructField(CORRUPT, StringType())])
_STRICT = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT, "allowSingleQuotes": "false"}
#: Connect schema types -> Spark types of added columns (logical types by schema name first).
_LOGICAL = {"org.apache.kafka.connect.data.Timestamp": "timestamp", "io.debezium.time.ZonedTimestamp": "timestamp",
            "io.debezium.time.MicroTimestamp": "timestamp_micros", "io.debezium.time.Timestamp": "timestamp",
            "io.debezium.time.NanoTimestamp": "timestamp_nanos", "io.debezium.time.IsoTimestamp": "timestamp"}
_PRIMITIVE = {"int8": "int", "int16": "int", "int32": "int", "int64": "bigint", "float32": "double",
              "float64": "double", "boolean": "boolean", "string": "string"}


def _parsed(text: Column) -> Column:
    """The wrapper ``{"e": <value>, "z": 0}`` parsed; keep it in a column of its own, so the JSON is parsed
    once per record (each reference to an inline ``from_json`` would parse it again)."""
    return F.from_json(F.concat(F.lit('{"e":'), text, F.lit(',"z":0}')), _WRAPPER, _STRICT)


def _envelope(parsed: Column) -> tuple[Column, Column]:
    """(the envelope struct, true when the value was one JSON object with nothing after it) of a
    :func:`_parsed` column."""
    outer = parsed.getField("e")
    flat = F.struct(*[outer.getField(f.name).alias(f.name) for f in _ENVELOPE_FIELDS])
    envelope = F.when(outer.getField("payload").isNotNull(), outer.getField("payload")).otherwise(flat)
    sound = parsed.isNotNull() & parsed.getField(CORRUPT).isNull() & parsed.getField("z").isNotNull() & outer.isNotNull()
    return envelope, sound


def _key_map(key: Column) -> Column:
    """The record key as a column -> text map (``{"id": 1}``, or its ``payload`` when schemas are on)."""
    outer = F.from_json(key.cast("string"), _TEXT_MAP)
    return F.when(F.element_at(outer, "payload").isNotNull() & F.element_at(outer, "schema").isNotNull(),
                  F.from_json(F.element_at(outer, "payload"), _TEXT_MAP)).otherwise(outer)


def decode_debezium(records: DataFrame, events: EventsConfig, tombstones: bool = True) -> DataFrame:
    """Add ``_raw`` (declared columns as text, change metadata typed), ``_decode_error`` and ``_tombstone``.

    ``tombstones``: a null value is a change (op ``t``, for silver's deletes); otherwise (gold) it stays a
    record without a value, which parsing rejects.
    """
    text = F.col("value").cast("string")
    records = records.withColumn("_dbz_parsed", _parsed(text))
    parsed_envelope, sound = _envelope(F.col("_dbz_parsed"))
    records = records.withColumns({"_dbz_envelope": parsed_envelope, "_dbz_sound": sound,
                                   "_dbz_tombstone": F.col("value").isNull() & F.lit(tombstones)})
    envelope, sound, is_tombstone = F.col("_dbz_envelope"), F.col("_dbz_sound"), F.col("_dbz_tombstone")
    records = records.withColumn("_dbz_key", F.when(is_tombstone, _key_map(F.col("key"))))
    op = envelope.getField("op")
    records = records.withColumn("_dbz_image", F.when(is_tombstone, F.col("_dbz_key"))
                                 .when(op == "d", envelope.getField("before")).otherwise(envelope.getField("after")))
    image = F.col("_dbz_image")
    source = envelope.getField("source")
    columns = {name: image.getItem(name) for name in events.schema_ if name not in CDC_FIELDS}
    columns |= {
        "cdc_id": F.concat_ws("/", source.getField("lsn").cast("string"), F.col("key").cast("string")),
        "cdc_op": F.when(is_tombstone, F.lit("t")).otherwise(op),
        "cdc_lsn": source.getField("lsn"),
        "cdc_ts": F.timestamp_millis(source.getField("ts_ms")),
        "cdc_tx_id": source.getField("txId"),
    }
    raw = F.struct(*[column.alias(name) for name, column in columns.items()])
    key_known = image.isNotNull() & (image.getItem(events.key).isNotNull() if events.key else F.lit(True))
    error = (F.when(F.col("value").isNull(), F.when(is_tombstone & ~key_known, decode_error(
                "envelope", F.lit(f"tombstone without a JSON key holding {events.key or 'the row key'!r}: "
                                  "the deleted row is unknown"))))
             .when(~F.is_valid_utf8(text), decode_error("encoding", F.lit("payload is not valid UTF-8")))
             .when(~sound, decode_error("json", F.concat(F.lit("payload is not a JSON object: "),
                                                         F.substring(text, 1, 120))))
             .when(op.isNull(), decode_error("envelope", F.lit("not a Debezium change event: no 'op'")))
             .when(~op.isin("r", "c", "u", "d"), decode_error(
                 "envelope", F.concat(F.lit("unknown op '"), op, F.lit("' (expected r, c, u or d)")), "cdc_op"))
             .when(image.isNull(), decode_error("envelope", F.concat(
                 F.lit("op '"), op, F.lit("' without a row image ('"),
                 F.when(op == "d", F.lit("before")).otherwise(F.lit("after")), F.lit("' is null)"))))
             .when(source.getField("lsn").isNull(), decode_error(
                 "envelope", F.lit("change without source.lsn: changes cannot be ordered"), "cdc_lsn")))
    return (records.withColumn("_raw", F.when(is_tombstone | sound, raw))
            .withColumn("_decode_error", error).withColumn(TOMBSTONE, is_tombstone)
            .drop("_dbz_parsed", "_dbz_envelope", "_dbz_sound", "_dbz_tombstone", "_dbz_key", "_dbz_image"))


def _after_text(value: Column) -> Column:
    envelope, _ = _envelope(_parsed(value.cast("string")))
    return envelope.getField("after")


def _spark_type(connect_type: str | None, name: str | None) -> str:
    return _LOGICAL.get(name or "", _PRIMITIVE.get(connect_type or "", "string"))


def _connect_types(rows: DataFrame, value: str, names: Iterable[str]) -> dict[str, str]:
    """Spark type per added column from the Connect schema of the envelope (``schemas.enable=true``)."""
    field = StructType([StructField("field", StringType()), StructField("type", StringType()),
                        StructField("name", StringType())])
    schema = StructType([StructField("schema", StructType([StructField("fields", ArrayType(StructType([
        StructField("field", StringType()), StructField("fields", ArrayType(field))])))]))])
    parts = F.from_json(F.col(value).cast("string"), schema).getField("schema").getField("fields")
    after = F.filter(parts, lambda part: part.getField("field") == "after")
    found = (rows.select(F.explode(F.flatten(F.transform(after, lambda part: part.getField("fields")))).alias("f"))
             .where(F.col("f.field").isin(*names)).select("f.field", "f.type", "f.name").distinct().collect())
    return {row["field"]: _spark_type(row["type"], row["name"]) for row in found}


def _typed(text: Column, spark_type: str) -> Column:
    if spark_type == "timestamp_micros":
        return F.timestamp_micros(text.try_cast("bigint"))
    if spark_type == "timestamp_nanos":
        return F.timestamp_micros((text.try_cast("bigint") / 1000).cast("bigint"))
    if spark_type == "timestamp":  # epoch millis (Connect Timestamp) or ISO text (ZonedTimestamp)
        return F.coalesce(F.timestamp_millis(text.try_cast("bigint")), text.try_cast("timestamp"))
    return text.try_cast(spark_type)


def added_columns(rows: DataFrame, declared: Iterable[str], value: str = "_dq_value") -> DataFrame:
    """``rows`` with a column for every ``after`` field of the envelope in ``value`` that is not ``declared``
    (typed from the Connect schema when the envelope has one, else text). Rows without the field get null.

    Runs one small aggregate per batch to list the fields; nothing more when there are none."""
    known = set(declared) | set(rows.columns)
    keys = [r[0] for r in rows.select(F.explode(F.map_keys(_after_text(F.col(value))))).distinct().collect()
            if r[0] not in known]
    if not keys:
        return rows
    types = _connect_types(rows, value, keys)
    after = F.col("_dbz_after")  # parsed once per row, whatever the number of added columns
    return (rows.withColumn("_dbz_after", _after_text(F.col(value)))
            .withColumns({key: _typed(after.getItem(key), types.get(key, "string")) for key in sorted(keys)})
            .drop("_dbz_after"))
