"""Decode Protobuf Kafka values (Confluent wire format or plain) into a ``_raw`` struct, batch by batch.

There is no ``spark-protobuf`` jar to rely on, so decoding runs in the Python workers through
``DataFrame.mapInArrow``: each Arrow batch's ``value`` column is parsed with the ``protobuf``
package (upb) in one tight loop, and the output columns are built column-wise. Nothing
non-picklable is captured: the workers rebuild the message class from the descriptor-set bytes,
once per process. A record that cannot be decoded keeps its row: ``_raw`` is null and
``_decode_error`` says why (rule ``magic_byte``, ``message_index`` or ``protobuf``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from typing import Any, Literal

import pyarrow as pa
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from pyspark.sql import DataFrame
from pyspark.sql.types import (BinaryType, BooleanType, DataType, DecimalType, DoubleType, FloatType, IntegerType,
                               LongType, StringType, StructField, StructType, TimestampType)

from kappalake.formats.protobuf_schema import MessageSchema, load_message, spark_fields

Wire = Literal["confluent", "plain"]
ERROR_TYPE = "struct<rule:string,field:string,message:string>"
OUTPUT_COLUMNS = ("_raw", "_decode_error", "_schema_id")

_ARROW: dict[str, pa.DataType] = {
    "string": pa.string(), "binary": pa.binary(), "boolean": pa.bool_(), "int": pa.int32(),
    "long": pa.int64(), "float": pa.float32(), "double": pa.float64(),
    "decimal(20,0)": pa.decimal128(20, 0), "timestamp": pa.timestamp("us", tz="UTC"),
}
_SPARK: dict[str, DataType] = {
    "string": StringType(), "binary": BinaryType(), "boolean": BooleanType(), "int": IntegerType(),
    "long": LongType(), "float": FloatType(), "double": DoubleType(), "decimal(20,0)": DecimalType(20, 0),
    "timestamp": TimestampType(),
}
_ERROR_ARROW = pa.struct([("rule", pa.string()), ("field", pa.string()), ("message", pa.string())])
#: google.protobuf.Timestamp's valid range (0001-01-01 .. 9999-12-31), which Spark timestamps hold too.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799

Problems = dict[int, str]  # row -> message, for values a column cannot hold
Extract = Callable[[list[Message], Problems], list[Any]]


def _extractor(field: FieldDescriptor, spark_type: str) -> Extract:
    """A column-wise reader of one field over a batch of messages (failed rows hold an empty message)."""
    name = field.name
    get = attrgetter(name)
    message_type = field.message_type.full_name if field.message_type is not None else None

    if spark_type == "timestamp":
        known = {1, 2}

        def timestamps(messages: list[Message], problems: Problems) -> list[Any]:
            out: list[Any] = []
            for row, m in enumerate(messages):
                if not m.HasField(name):
                    out.append(None)
                    continue
                t = get(m)
                seconds, nanos = t.seconds, t.nanos
                if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos <= 999_999_999):
                    problems[row] = f"field {name!r}: Timestamp(seconds={seconds}, nanos={nanos}) is out of range"
                    out.append(None)
                    continue
                unknown = UnknownFieldSet(t)
                conflict = _conflicts(unknown, known) if len(unknown) else None
                if conflict is not None:
                    problems[row] = f"field {name!r}: {conflict}"
                out.append(seconds * 1_000_000 + nanos // 1000)
            return out
        return timestamps

    if message_type is not None:  # a google.protobuf wrapper: null when unset
        return lambda messages, _: [get(m).value if m.HasField(name) else None for m in messages]

    convert: Callable[[Any], Any] | None = None
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = {v.number: v.name for v in field.enum_type.values}
        convert = lambda v: names.get(v, str(v))  # noqa: E731 - an open enum may carry unknown numbers
    if field.has_presence:
        if convert is None:
            return lambda messages, _: [get(m) if m.HasField(name) else None for m in messages]
        return lambda messages, _: [convert(get(m)) if m.HasField(name) else None for m in messages]
    if convert is not None:
        return lambda messages, _: list(map(convert, map(get, messages)))
    if spark_type == "string":  # proto3 cannot tell "" from unset: a missing id must be null
        return lambda messages, _: [v or None for v in map(get, messages)]
    return lambda messages, _: list(map(get, messages))


def _conflicts(unknown: UnknownFieldSet, known: set[int]) -> str | None:
    """A declared field that arrived as an unknown field came with the wrong wire type."""
    for item in unknown:
        if item.field_number in known:
            return f"field number {item.field_number} has the wrong wire type {item.wire_type}"
    return None


def _read_indexes(value: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    """Read the Confluent message-index array (zigzag varints; a lone 0 means ``[0]``) at ``pos``."""
    def varint() -> int:
        nonlocal pos
        result = shift = 0
        while True:
            if pos >= len(value):
                raise ValueError("the message-index array is truncated")
            if shift > 63:
                raise ValueError("the message-index array holds an over-long varint")
            byte = value[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return (result >> 1) ^ -(result & 1)

    count = varint()
    if count == 0:
        return (0,), pos
    if count < 0:
        raise ValueError(f"the message-index array has a negative length {count}")
    if count > len(value) - pos:
        raise ValueError(f"the message-index array is truncated: it announces {count} indexes, "
                         f"{len(value) - pos} byte(s) follow")
    path = tuple(varint() for _ in range(count))
    if any(index < 0 for index in path):
        raise ValueError(f"the message-index array {list(path)} holds a negative index")
    return path, pos


class _Decoder:
    """Decodes lists of Kafka values for one (descriptor set, message, fields, wire); one per process."""

    def __init__(self, descriptor_set: bytes, message: str, fields: Sequence[str], wire: Wire) -> None:
        schema = load_message(descriptor_set, message)
        types = spark_fields(schema, fields)
        self.schema: MessageSchema = schema
        self.confluent = wire == "confluent"
        self.parse = schema.message_class.FromString
        self.empty = schema.message_class()
        self.known = {f.number for f in schema.descriptor.fields}
        by_name = schema.descriptor.fields_by_name
        self.extractors = [_extractor(by_name[name], t) for name, t in types]
        self.raw_type = pa.struct([(name, _ARROW[t]) for name, t in types])
        self.expected = schema.index_path
        self.cant_parse = f"payload does not parse as {schema.full_name}: "

    def _index_error(self, path: tuple[int, ...]) -> str:
        named = self.schema.name_at(path)
        what = f"names {named}" if named else "names no message"
        return (f"message index {list(path)} {what} in the configured descriptor set, "
                f"not {self.schema.full_name} (index {list(self.expected)})")

    def decode(self, values: list[bytes | None]) -> tuple[pa.Array, pa.Array, pa.Array]:
        """``values`` -> (``_raw``, ``_decode_error``, ``_schema_id``) Arrow arrays of the same length."""
        # The loop allocates a few objects per record and frees none until the batch is done: the cyclic
        # garbage collector would only rescan them (a quarter of the time), so it pauses for the batch.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._decode(values)
        finally:
            if collecting:
                gc.enable()

    def _decode(self, values: list[bytes | None]) -> tuple[pa.Array, pa.Array, pa.Array]:
        parse, empty, known, confluent = self.parse, self.empty, self.known, self.confluent
        fast = self.expected == (0,)
        messages: list[Message] = []
        invalid: list[bool] = []
        ids: list[int | None] = []
        errors: dict[int, tuple[str, str]] = {}
        for row, value in enumerate(values):
            if value is None:
                messages.append(empty)
                invalid.append(True)
                ids.append(None)
                continue
            payload = value
            if confluent:
                if len(value) < 5 or value[0] != 0:
                    errors[row] = ("magic_byte", (
                        f"payload of {len(value)} bytes is too short for the Confluent header (5 bytes)"
                        if len(value) < 5 else
                        f"payload does not start with the Confluent magic byte 0 (got 0x{value[0]:02x})"))
                    messages.append(empty)
                    invalid.append(True)
                    ids.append(None)
                    continue
                ids.append(int.from_bytes(value[1:5], "big", signed=True))
                if fast and len(value) > 5 and value[5] == 0:
                    payload = value[6:]
                else:
                    try:
                        path, pos = _read_indexes(value, 5)
                    except ValueError as exc:
                        path, pos, reason = (), 0, str(exc)
                    else:
                        reason = None if path == self.expected else self._index_error(path)
                    if reason is not None:
                        errors[row] = ("message_index", reason)
                        messages.append(empty)
                        invalid.append(True)
                        continue
                    payload = value[pos:]
            else:
                ids.append(None)
            try:
                message = parse(payload)
            except (DecodeError, RuntimeError, ValueError) as exc:
                errors[row] = ("protobuf", self.cant_parse + str(exc))
                messages.append(empty)
                invalid.append(True)
                continue
            unknown = UnknownFieldSet(message)
            if len(unknown):
                conflict = _conflicts(unknown, known)
                if conflict is not None:
                    errors[row] = ("protobuf", self.cant_parse + conflict)
                    messages.append(empty)
                    invalid.append(True)
                    continue
            messages.append(message)
            invalid.append(False)

        problems: Problems = {}
        columns = [extract(messages, problems) for extract in self.extractors]
        for row, problem in problems.items():
            if not invalid[row]:
                invalid[row] = True
                errors[row] = ("protobuf", self.cant_parse + problem)
        children = [pa.array(col, type=field.type) for col, field in zip(columns, self.raw_type)]
        raw = pa.StructArray.from_arrays(children, fields=list(self.raw_type), mask=pa.array(invalid, pa.bool_()))
        return raw, _errors(errors, len(values)), pa.array(ids, pa.int32())


def _errors(errors: dict[int, tuple[str, str]], n: int) -> pa.Array:
    if not errors:
        return pa.nulls(n, _ERROR_ARROW)
    rules: list[str | None] = [None] * n
    messages: list[str | None] = [None] * n
    for row, (rule, message) in errors.items():
        rules[row], messages[row] = rule, message
    mask = pa.array([rule is None for rule in rules], pa.bool_())
    return pa.StructArray.from_arrays(
        [pa.array(rules, pa.string()), pa.nulls(n, pa.string()), pa.array(messages, pa.string())],
        fields=list(_ERROR_ARROW), mask=mask)


_DECODERS: dict[tuple[bytes, str, tuple[str, ...], str], _Decoder] = {}


def _decoder(descriptor_set: bytes, message: str, fields: tuple[str, ...], wire: Wire) -> _Decoder:
    key = (descriptor_set, message, fields, wire)
    if key not in _DECODERS:
        _DECODERS[key] = _Decoder(descriptor_set, message, fields, wire)
    return _DECODERS[key]


class _DecodeBatches:
    """The picklable ``mapInArrow`` function: plain data only, the decoder is built in the worker."""

    def __init__(self, descriptor_set: bytes, message: str, fields: tuple[str, ...], wire: Wire) -> None:
        self.key = (descriptor_set, message, fields, wire)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        decoder = _decoder(*self.key)
        for batch in batches:
            raw, errors, ids = decoder.decode(batch.column("value").to_pylist())
            schema = batch.schema.append(pa.field("_raw", raw.type)).append(
                pa.field("_decode_error", errors.type)).append(pa.field("_schema_id", pa.int32()))
            yield pa.RecordBatch.from_arrays([*batch.columns, raw, errors, ids], schema=schema)


def decode_protobuf(records: DataFrame, descriptor_set: bytes, message: str, fields: list[str],
                    wire: Wire) -> DataFrame:
    """Decode ``records.value`` as Protobuf message ``message`` (full name) of the serialized
    FileDescriptorSet ``descriptor_set``. Adds ``_raw`` (struct of ``fields``), ``_decode_error``
    (rule, field, message) and ``_schema_id`` (the Confluent header's id) to every input column.
    Works on batch and streaming DataFrames alike."""
    if wire not in ("confluent", "plain"):
        raise ValueError(f"wire must be 'confluent' or 'plain', not {wire!r}")
    if "value" not in records.columns:
        raise ValueError(f"decode_protobuf needs a binary 'value' column (columns: {', '.join(records.columns)})")
    if records.schema["value"].dataType.simpleString() != "binary":
        raise ValueError(f"column 'value' must be binary, not {records.schema['value'].dataType.simpleString()}")
    clashes = [c for c in OUTPUT_COLUMNS if c in records.columns]
    if clashes:
        raise ValueError(f"the input already has column(s) {', '.join(clashes)}, which decode_protobuf adds")
    types = spark_fields(load_message(descriptor_set, message), fields)  # fails fast on unknown fields
    raw = StructType([StructField(name, _SPARK[t]) for name, t in types])
    error = StructType([StructField(name, StringType()) for name in ("rule", "field", "message")])
    schema = StructType([*records.schema.fields, StructField("_raw", raw), StructField("_decode_error", error),
                         StructField("_schema_id", IntegerType())])
    return records.mapInArrow(_DecodeBatches(bytes(descriptor_set), message, tuple(fields), wire), schema)
