"""Protobuf schemas from a binary FileDescriptorSet (``protoc --include_imports --descriptor_set_out``).

``load_message`` finds one message in the set and builds its runtime class on a private
``DescriptorPool`` (nothing is registered globally, so two pipelines may load different versions of
the same file). ``spark_fields`` maps the message's fields to Spark SQL types; only flat messages are
supported so far: scalars, enums (as their symbol name), ``google.protobuf.Timestamp`` and the
``google.protobuf`` wrapper types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

_F = FieldDescriptor

#: Scalar protobuf field types -> Spark SQL type. Unsigned 32-bit values need a long, unsigned 64-bit
#: ones a decimal(20,0) (a Spark long would turn values above 2^63-1 negative).
SCALAR_TYPES: dict[int, str] = {
    _F.TYPE_STRING: "string",
    _F.TYPE_BYTES: "binary",
    _F.TYPE_BOOL: "boolean",
    _F.TYPE_INT32: "int",
    _F.TYPE_SINT32: "int",
    _F.TYPE_SFIXED32: "int",
    _F.TYPE_UINT32: "long",
    _F.TYPE_FIXED32: "long",
    _F.TYPE_INT64: "long",
    _F.TYPE_SINT64: "long",
    _F.TYPE_SFIXED64: "long",
    _F.TYPE_UINT64: "decimal(20,0)",
    _F.TYPE_FIXED64: "decimal(20,0)",
    _F.TYPE_FLOAT: "float",
    _F.TYPE_DOUBLE: "double",
    _F.TYPE_ENUM: "string",
}

TIMESTAMP = "google.protobuf.Timestamp"

#: google/protobuf/wrappers.proto message -> Spark type of its ``value`` (always nullable: null when unset).
WRAPPER_TYPES: dict[str, str] = {
    "google.protobuf.DoubleValue": "double",
    "google.protobuf.FloatValue": "float",
    "google.protobuf.Int64Value": "long",
    "google.protobuf.UInt64Value": "decimal(20,0)",
    "google.protobuf.Int32Value": "int",
    "google.protobuf.UInt32Value": "long",
    "google.protobuf.BoolValue": "boolean",
    "google.protobuf.StringValue": "string",
    "google.protobuf.BytesValue": "binary",
}


@dataclass(frozen=True)
class MessageSchema:
    """One message of a descriptor set: its descriptor, runtime class and place in its file."""

    descriptor: Descriptor
    message_class: type[Message]
    #: The Confluent message-index path of the message within its file: ``(0,)`` for the first
    #: top-level message, ``(1, 0)`` for the first message nested in the second one, ...
    index_path: tuple[int, ...]

    @property
    def full_name(self) -> str:
        return self.descriptor.full_name

    def name_at(self, path: Sequence[int]) -> str | None:
        """The full name of the message at index ``path`` in this message's file, or None."""
        pool = self.descriptor.file.pool
        proto = descriptor_pb2.FileDescriptorProto()
        self.descriptor.file.CopyToProto(proto)
        candidates: Sequence[Descriptor] = _top_level(pool, proto)
        found: Descriptor | None = None
        for index in path:
            if not 0 <= index < len(candidates):
                return None
            found = candidates[index]
            candidates = found.nested_types
        return found.full_name if found is not None else None


def _file_set(descriptor_set: bytes) -> descriptor_pb2.FileDescriptorSet:
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    except DecodeError as exc:
        raise ValueError(f"not a binary FileDescriptorSet (protoc --descriptor_set_out): {exc}") from None
    if not files.file:
        raise ValueError("the descriptor set holds no files (was it written with protoc --descriptor_set_out?)")
    return files


def _add_files(pool: descriptor_pool.DescriptorPool, files: Sequence[descriptor_pb2.FileDescriptorProto]) -> None:
    """Add ``files`` to ``pool`` dependencies first, whatever their order in the set."""
    pending = {f.name: f for f in files}
    added: set[str] = set()

    def add(name: str, chain: tuple[str, ...]) -> None:
        if name in added:
            return
        if name in chain:
            raise ValueError(f"import cycle in the descriptor set: {' -> '.join((*chain, name))}")
        if name not in pending:
            raise ValueError(f"the descriptor set lacks the imported file {name!r} "
                             "(write it with protoc --include_imports)")
        for dependency in pending[name].dependency:
            add(dependency, (*chain, name))
        pool.Add(pending[name])
        added.add(name)

    for name in pending:
        add(name, ())


def _messages(descriptors: Sequence[Descriptor], path: tuple[int, ...] = ()) -> dict[str, tuple[Descriptor, tuple[int, ...]]]:
    found: dict[str, tuple[Descriptor, tuple[int, ...]]] = {}
    for index, descriptor in enumerate(descriptors):
        here = (*path, index)
        if not descriptor.GetOptions().map_entry:
            found[descriptor.full_name] = (descriptor, here)
        found.update(_messages(descriptor.nested_types, here))
    return found


def _top_level(pool: descriptor_pool.DescriptorPool, proto: descriptor_pb2.FileDescriptorProto) -> list[Descriptor]:
    """The file's top-level messages in declaration order (the order Confluent message indexes count)."""
    prefix = f"{proto.package}." if proto.package else ""
    return [pool.FindMessageTypeByName(prefix + m.name) for m in proto.message_type]


def _catalog(descriptor_set: bytes) -> dict[str, tuple[Descriptor, tuple[int, ...]]]:
    """Every message of the set (nested ones too) -> (descriptor, index path within its file)."""
    pool = descriptor_pool.DescriptorPool()
    files = _file_set(descriptor_set).file
    _add_files(pool, files)
    found: dict[str, tuple[Descriptor, tuple[int, ...]]] = {}
    for proto in files:
        found.update(_messages(_top_level(pool, proto)))
    return found


def message_names(descriptor_set: bytes) -> list[str]:
    """The full names of all messages (nested ones included) the descriptor set defines."""
    return list(_catalog(descriptor_set))


def load_message(descriptor_set: bytes, message: str) -> MessageSchema:
    """Load message ``message`` (its full name, e.g. ``kappalake.payments.Payment``) from a serialized
    FileDescriptorSet; a ValueError lists the set's messages when there is no such message."""
    everything = _catalog(descriptor_set)
    if message not in everything:
        known = ", ".join(sorted(everything)) or "none"
        raise ValueError(f"message {message!r} is not in the descriptor set (it has: {known}); "
                         "name the message with its package, e.g. package.Message")
    descriptor, path = everything[message]
    return MessageSchema(descriptor, message_factory.GetMessageClass(descriptor), path)


def field_type(schema: MessageSchema, field: FieldDescriptor) -> str:
    """The Spark SQL type of one field; ValueError for the kinds not supported yet."""
    where = f"field {field.name!r} of {schema.full_name}"
    if field.is_repeated:
        kind = "map" if field.message_type is not None and field.message_type.GetOptions().map_entry else "repeated"
        raise ValueError(f"{where} is a {kind} field: not supported yet")
    if field.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
        name = field.message_type.full_name
        if name == TIMESTAMP:
            return "timestamp"
        if name in WRAPPER_TYPES:
            return WRAPPER_TYPES[name]
        raise ValueError(f"{where} is a nested message ({name}): not supported yet "
                         f"(only {TIMESTAMP} and the google.protobuf wrapper types are)")
    return SCALAR_TYPES[field.type]


def spark_fields(schema: MessageSchema, fields: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """``(name, Spark SQL type)`` of ``fields`` (default: all fields, in declaration order). A name the
    message lacks, or a field of a kind not supported yet, is a ValueError."""
    by_name = schema.descriptor.fields_by_name
    names = list(fields) if fields is not None else [f.name for f in schema.descriptor.fields]
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(f"{schema.full_name} has no field {', '.join(map(repr, missing))} "
                         f"(its fields: {', '.join(f.name for f in schema.descriptor.fields)})")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"fields listed twice: {', '.join(duplicated)}")
    return [(name, field_type(schema, by_name[name])) for name in names]
