"""JSON payloads -> ``_raw`` (one text column per declared field) and ``_decode_error``.

Every field is read as its raw JSON text; :mod:`~kappalake.transforms.parse` casts and checks it. The
payload is parsed inside a wrapper object, ``{"e": <payload>, "z": 0}``: Spark's parser stops after the
first JSON value, so two concatenated objects ``{..}{..}`` or ``{..} garbage`` would otherwise pass as the
first object with the rest dropped; inside the wrapper they are a syntax error (or leave ``z`` unset).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from kappalake.config.models import EventsConfig

CORRUPT = "_corrupt_record"
_WRAPPED, _SENTINEL = "e", "z"


def decode_error(rule: str, message: Column, field: str | None = None) -> Column:
    """A ``struct<rule, field, message>`` error value."""
    return F.struct(F.lit(rule).alias("rule"), F.lit(field).cast("string").alias("field"),
                    message.alias("message"))


def _wrapper_schema(events: EventsConfig) -> StructType:
    payload = StructType([StructField(name, StringType()) for name in events.schema_])
    return StructType([StructField(_WRAPPED, payload), StructField(_SENTINEL, IntegerType()),
                       StructField(CORRUPT, StringType())])


def decode_json(records: DataFrame, events: EventsConfig) -> DataFrame:
    """Add ``_raw`` (the declared fields as JSON text, null when the payload is not one JSON object) and
    ``_decode_error`` (encoding or syntax; null for a sound payload or a null value)."""
    text = F.col("value").cast("string")
    wrapped = F.concat(F.lit('{"e":'), text, F.lit(',"z":0}'))
    strict = {"allowSingleQuotes": "false"}  # RFC 8259 JSON only: Spark accepts {'a': 1} by default
    parsed = F.from_json(wrapped, _wrapper_schema(events),
                         {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT, **strict})
    df = records.withColumn("_wrapped", parsed)
    envelope = F.col("_wrapped")
    # One object and nothing after it but whitespace: the wrapper parsed, its sentinel is there, the payload
    # is an object (an array, a string or a number in "e" does not fit the struct).
    json_ok = (envelope.isNotNull() & envelope.getField(CORRUPT).isNull()
               & envelope.getField(_SENTINEL).isNotNull() & envelope.getField(_WRAPPED).isNotNull())
    error = (F.when(F.col("value").isNull(), F.lit(None))
             .when(~F.is_valid_utf8(text), decode_error("encoding", F.lit("payload is not valid UTF-8")))
             .when(~json_ok, decode_error("json", F.concat(F.lit("payload is not a JSON object: "),
                                                           F.substring(text, 1, 120)))))
    return (df.withColumn("_raw", F.when(json_ok, envelope.getField(_WRAPPED)))
            .withColumn("_decode_error", error).drop("_wrapped"))
