"""Protobuf descriptor sets: loading messages, Spark type mapping, errors, and the committed payment.desc."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, timestamp_pb2, wrappers_pb2

from kappalake.formats.protobuf_schema import load_message, message_names, spark_fields

REPO = Path(__file__).resolve().parents[2]
PAYMENT_DESC = REPO / "conf" / "schemas" / "payment.desc"
PAYMENT = "kappalake.payments.Payment"
_F = descriptor_pb2.FieldDescriptorProto

#: The ``Kitchen`` test message: (name, number, type, type name, proto3 ``optional``) -> expected Spark type.
KITCHEN: list[tuple[str, int, int, str | None, bool, str]] = [
    ("s", 1, _F.TYPE_STRING, None, False, "string"),
    ("b", 2, _F.TYPE_BYTES, None, False, "binary"),
    ("flag", 3, _F.TYPE_BOOL, None, False, "boolean"),
    ("i32", 4, _F.TYPE_INT32, None, False, "int"),
    ("si32", 5, _F.TYPE_SINT32, None, False, "int"),
    ("sf32", 6, _F.TYPE_SFIXED32, None, False, "int"),
    ("u32", 7, _F.TYPE_UINT32, None, False, "long"),
    ("f32", 8, _F.TYPE_FIXED32, None, False, "long"),
    ("i64", 9, _F.TYPE_INT64, None, False, "long"),
    ("si64", 10, _F.TYPE_SINT64, None, False, "long"),
    ("sf64", 11, _F.TYPE_SFIXED64, None, False, "long"),
    ("u64", 12, _F.TYPE_UINT64, None, False, "decimal(20,0)"),
    ("f64", 13, _F.TYPE_FIXED64, None, False, "decimal(20,0)"),
    ("fl", 14, _F.TYPE_FLOAT, None, False, "float"),
    ("db", 15, _F.TYPE_DOUBLE, None, False, "double"),
    ("status", 16, _F.TYPE_ENUM, ".kappalake.test.Status", False, "string"),
    ("at", 17, _F.TYPE_MESSAGE, ".google.protobuf.Timestamp", False, "timestamp"),
    ("note", 18, _F.TYPE_MESSAGE, ".google.protobuf.StringValue", False, "string"),
    ("count", 19, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False, "long"),
    ("ratio", 20, _F.TYPE_MESSAGE, ".google.protobuf.DoubleValue", False, "double"),
    ("big", 21, _F.TYPE_MESSAGE, ".google.protobuf.UInt64Value", False, "decimal(20,0)"),
    ("maybe", 22, _F.TYPE_STRING, None, True, "string"),
    ("maybe_n", 23, _F.TYPE_INT32, None, True, "int"),
]


def _file(proto: object) -> descriptor_pb2.FileDescriptorProto:
    out = descriptor_pb2.FileDescriptorProto()
    proto.DESCRIPTOR.CopyToProto(out)  # type: ignore[attr-defined]
    return out


def shop_descriptor_set() -> bytes:
    """kappalake/test/shop.proto: Payment (index 0, with a nested Line), Refund (1), Kitchen (2, every
    supported field kind) and Unsupported (3: a repeated, a map and a nested-message field)."""
    shop = descriptor_pb2.FileDescriptorProto(
        name="kappalake/test/shop.proto", package="kappalake.test", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"])
    shop.enum_type.add(name="Status").value.extend([
        descriptor_pb2.EnumValueDescriptorProto(name="STATUS_UNSPECIFIED", number=0),
        descriptor_pb2.EnumValueDescriptorProto(name="APPROVED", number=1),
        descriptor_pb2.EnumValueDescriptorProto(name="DECLINED", number=2)])
    payment = shop.message_type.add(name="Payment")
    payment.field.add(name="event_id", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    payment.field.add(name="amount", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    payment.nested_type.add(name="Line").field.add(name="sku", number=1, label=_F.LABEL_OPTIONAL,
                                                   type=_F.TYPE_STRING)
    refund = shop.message_type.add(name="Refund")
    refund.field.add(name="refund_id", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    refund.field.add(name="cents", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_INT64)
    kitchen = shop.message_type.add(name="Kitchen")
    for name, number, type_, type_name, optional, _ in KITCHEN:
        field = kitchen.field.add(name=name, number=number, label=_F.LABEL_OPTIONAL, type=type_)
        if type_name:
            field.type_name = type_name
        if optional:  # proto3 optional = a synthetic oneof of its own
            field.proto3_optional = True
            field.oneof_index = len(kitchen.oneof_decl)
            kitchen.oneof_decl.add(name=f"_{name}")
    unsupported = shop.message_type.add(name="Unsupported")
    entry = unsupported.nested_type.add(name="TagsEntry", options=descriptor_pb2.MessageOptions(map_entry=True))
    entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    unsupported.field.add(name="ok", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    unsupported.field.add(name="items", number=2, label=_F.LABEL_REPEATED, type=_F.TYPE_STRING)
    unsupported.field.add(name="tags", number=3, label=_F.LABEL_REPEATED, type=_F.TYPE_MESSAGE,
                          type_name=".kappalake.test.Unsupported.TagsEntry")
    unsupported.field.add(name="refund", number=4, label=_F.LABEL_OPTIONAL, type=_F.TYPE_MESSAGE,
                          type_name=".kappalake.test.Refund")
    # Dependencies after their user on purpose: the loader must not rely on the set's order.
    files = [shop, _file(timestamp_pb2), _file(wrappers_pb2)]
    return descriptor_pb2.FileDescriptorSet(file=files).SerializeToString()


def test_payment_descriptor_loads_with_its_index_and_types() -> None:
    schema = load_message(PAYMENT_DESC.read_bytes(), PAYMENT)
    assert schema.full_name == PAYMENT
    assert schema.index_path == (0,)
    assert spark_fields(schema) == [
        ("event_id", "string"), ("card_id", "string"), ("merchant_id", "string"), ("amount", "string"),
        ("currency", "string"), ("country", "string"), ("event_time", "timestamp")]
    message = schema.message_class(event_id="e-1", amount="12.50")
    message.event_time.seconds = 1_700_000_000
    parsed = schema.message_class.FromString(message.SerializeToString())
    assert (parsed.event_id, parsed.amount, parsed.event_time.seconds) == ("e-1", "12.50", 1_700_000_000)


def test_every_supported_kind_maps_to_its_spark_type() -> None:
    schema = load_message(shop_descriptor_set(), "kappalake.test.Kitchen")
    assert spark_fields(schema) == [(name, spark) for name, *_, spark in KITCHEN]
    assert spark_fields(schema, ["at", "s"]) == [("at", "timestamp"), ("s", "string")]


def test_index_paths_count_declaration_order_and_nesting() -> None:
    shop = shop_descriptor_set()
    assert load_message(shop, "kappalake.test.Payment").index_path == (0,)
    assert load_message(shop, "kappalake.test.Refund").index_path == (1,)
    assert load_message(shop, "kappalake.test.Payment.Line").index_path == (0, 0)
    payment = load_message(shop, "kappalake.test.Payment")
    assert payment.name_at([1]) == "kappalake.test.Refund"
    assert payment.name_at([0, 0]) == "kappalake.test.Payment.Line"
    assert payment.name_at([9]) is None


def test_unknown_message_lists_the_messages_of_the_set() -> None:
    with pytest.raises(ValueError, match="message 'Payment' is not in the descriptor set") as error:
        load_message(PAYMENT_DESC.read_bytes(), "Payment")
    assert "google.protobuf.Timestamp, kappalake.payments.Payment" in str(error.value)
    assert "kappalake.test.Unsupported.TagsEntry" not in message_names(shop_descriptor_set())


def test_unknown_field_names_the_message_and_its_fields() -> None:
    schema = load_message(PAYMENT_DESC.read_bytes(), PAYMENT)
    with pytest.raises(ValueError, match=r"kappalake.payments.Payment has no field 'amount_cents' \(its fields: "
                                         r"event_id, card_id"):
        spark_fields(schema, ["event_id", "amount_cents"])


@pytest.mark.parametrize(("field", "error"), [
    ("items", r"field 'items' of kappalake.test.Unsupported is a repeated field: not supported yet"),
    ("tags", r"field 'tags' of kappalake.test.Unsupported is a map field: not supported yet"),
    ("refund", r"field 'refund' of kappalake.test.Unsupported is a nested message \(kappalake.test.Refund\): "
               r"not supported yet"),
])
def test_unsupported_fields_are_named_with_their_message(field: str, error: str) -> None:
    schema = load_message(shop_descriptor_set(), "kappalake.test.Unsupported")
    assert spark_fields(schema, ["ok"]) == [("ok", "string")]  # only the selected fields must be supported
    with pytest.raises(ValueError, match=error):
        spark_fields(schema, ["ok", field])


def test_broken_descriptor_sets_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="not a binary FileDescriptorSet"):
        load_message(b"syntax = 'proto3';", PAYMENT)
    with pytest.raises(ValueError, match="holds no files"):
        load_message(b"", PAYMENT)
    without_imports = descriptor_pb2.FileDescriptorSet.FromString(PAYMENT_DESC.read_bytes())
    del without_imports.file[0]
    with pytest.raises(ValueError, match="lacks the imported file 'google/protobuf/timestamp.proto'"):
        load_message(without_imports.SerializeToString(), PAYMENT)


def _build_script():
    spec = importlib.util.spec_from_file_location("build_descriptors", REPO / "scripts" / "build_descriptors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_descriptor_is_what_the_script_builds() -> None:
    script = _build_script()
    assert script.build() == PAYMENT_DESC.read_bytes(), "run: python scripts/build_descriptors.py"
    assert script.main(["--check"]) == 0


def test_proto_source_declares_the_fields_of_the_descriptor() -> None:
    source = (REPO / "conf" / "schemas" / "payment.proto").read_text()
    declared = re.findall(r"^\s*([\w.]+)\s+(\w+)\s*=\s*(\d+);", source, flags=re.M)
    schema = load_message(PAYMENT_DESC.read_bytes(), PAYMENT)
    in_descriptor = [(f.message_type.full_name if f.message_type else "string", f.name, str(f.number))
                     for f in schema.descriptor.fields]
    assert [tuple(d) for d in declared] == in_descriptor
    assert "package kappalake.payments;" in source
