"""Avro schema resolution (the spec's rules) and the Schema Registry compatibility levels."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kappalake.formats.avro_compat import AvroSchema, avro_incompatibilities, check_compatibility, validate


def record(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def f(name: str, kind: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, **extra}


def payment(*fields: dict[str, Any]) -> dict[str, Any]:
    return record("Order", f("id", "string"), f("payment", record("Payment", *fields)), namespace="shop")


def test_identical_and_json_text_inputs() -> None:
    schema = payment(f("amount", "double"))
    assert avro_incompatibilities(schema, schema) == []
    assert avro_incompatibilities(json.dumps(schema), json.dumps(schema)) == []
    assert avro_incompatibilities('"string"', "string") == []


@pytest.mark.parametrize("writer,reader", [("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"),
                                           ("long", "double"), ("float", "double"), ("string", "bytes"),
                                           ("bytes", "string")])
def test_promotions(writer: str, reader: str) -> None:
    assert avro_incompatibilities(payment(f("amount", reader)), payment(f("amount", writer))) == []


@pytest.mark.parametrize("writer,reader", [("long", "int"), ("double", "float"), ("string", "double"),
                                           ("boolean", "int"), ("null", "string"), ("double", "long")])
def test_no_demotion_nor_unrelated_types(writer: str, reader: str) -> None:
    assert avro_incompatibilities(payment(f("amount", reader)), payment(f("amount", writer))) == [
        f"field 'payment.amount': writer type {writer} cannot be read as reader type {reader}"]


def test_missing_field_needs_a_default_extra_writer_fields_are_skipped() -> None:
    writer = payment(f("amount", "double"), f("legacy", "string"))
    assert avro_incompatibilities(payment(f("amount", "double"), f("channel", "string")), writer) == [
        "field 'payment.channel' is missing in the writer schema and has no default in the reader schema"]
    assert avro_incompatibilities(payment(f("amount", "double"), f("channel", "string", default="web")), writer) == []
    assert avro_incompatibilities(payment(f("amount", "double"), f("note", ["null", "string"], default=None)),
                                  writer) == []


def test_several_problems_all_reported() -> None:
    messages = avro_incompatibilities(payment(f("amount", "double"), f("channel", "string")),
                                      payment(f("amount", "string")))
    assert messages == ["field 'payment.amount': writer type string cannot be read as reader type double",
                        "field 'payment.channel' is missing in the writer schema and has no default in the reader "
                        "schema"]


def test_field_and_record_aliases() -> None:
    writer = record("Old", f("amt", "int"), namespace="a")
    assert avro_incompatibilities(record("New", f("amount", "long", aliases=["amt"]), namespace="a",
                                         aliases=["Old"]), writer) == []
    assert avro_incompatibilities(record("New", f("amount", "long", aliases=["amt"])), writer) == [
        "the top-level schema: writer record a.Old cannot be read as reader record New (names differ and the "
        "reader has no alias for it)"]
    # records match by unqualified name, as Avro's Java SchemaCompatibility does
    assert avro_incompatibilities(record("Old", f("amt", "int"), namespace="b"), writer) == []


def test_unions() -> None:
    # writer union: every branch must resolve
    assert avro_incompatibilities(payment(f("amount", ["null", "double"])), payment(f("amount", ["null", "int"]))) == []
    assert avro_incompatibilities(payment(f("amount", "double")), payment(f("amount", ["null", "double"]))) == [
        "field 'payment.amount': writer type null cannot be read as reader type double"]
    # reader union: some branch must match
    assert avro_incompatibilities(payment(f("amount", ["null", "long"])), payment(f("amount", "int"))) == []
    assert avro_incompatibilities(payment(f("amount", ["null", "int"])), payment(f("amount", "string"))) == [
        "field 'payment.amount': writer type string cannot be read as reader type union [null, int]"]


def test_enums() -> None:
    def status(symbols: list[str], **extra: Any) -> dict[str, Any]:
        return record("R", f("status", {"type": "enum", "name": "Status", "symbols": symbols, **extra}))
    assert avro_incompatibilities(status(["A", "B", "C"]), status(["A", "B"])) == []
    assert avro_incompatibilities(status(["A"]), status(["A", "B", "C"])) == [
        "field 'status': writer enum Status has symbol(s) B, C missing in reader enum Status, which has no default"]
    assert avro_incompatibilities(status(["A", "X"], default="X"), status(["A", "B"])) == []


def test_arrays_maps_fixed_and_nested_types() -> None:
    assert avro_incompatibilities(record("R", f("xs", {"type": "array", "items": "long"})),
                                  record("R", f("xs", {"type": "array", "items": "int"}))) == []
    assert avro_incompatibilities(record("R", f("xs", {"type": "array", "items": "int"})),
                                  record("R", f("xs", {"type": "array", "items": "long"}))) == [
        "field 'xs': writer type long cannot be read as reader type int"]
    assert avro_incompatibilities(record("R", f("m", {"type": "map", "values": "string"})),
                                  record("R", f("m", {"type": "map", "values": "int"}))) == [
        "field 'm': writer type int cannot be read as reader type string"]
    assert avro_incompatibilities(record("R", f("m", {"type": "map", "values": "int"})),
                                  record("R", f("m", {"type": "array", "items": "int"}))) == [
        "field 'm': writer type array cannot be read as reader type map"]
    assert avro_incompatibilities(record("R", f("h", {"type": "fixed", "name": "H", "size": 8})),
                                  record("R", f("h", {"type": "fixed", "name": "H", "size": 16}))) == [
        "field 'h': writer fixed H has size 16, reader fixed H size 8"]
    assert avro_incompatibilities(record("R", f("h", {"type": "fixed", "name": "H", "size": 8})),
                                  record("R", f("h", {"type": "fixed", "name": "G", "size": 8})))[0].startswith(
        "field 'h': writer fixed G cannot be read as reader fixed H")


def test_logical_types_follow_underlying_types_unless_both_sides_have_one() -> None:
    decimal = {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    date = {"type": "int", "logicalType": "date"}
    assert avro_incompatibilities(record("R", f("x", decimal)), record("R", f("x", "bytes"))) == []
    assert avro_incompatibilities(record("R", f("x", millis)), record("R", f("x", "int"))) == []  # int -> long
    # days read as milliseconds would be wrong values, although int promotes to long
    assert avro_incompatibilities(record("R", f("x", millis)), record("R", f("x", date))) == [
        "field 'x': writer type int as date cannot be read as reader type long as timestamp-millis"]
    assert avro_incompatibilities(record("R", f("x", date)), record("R", f("x", millis))) == [
        "field 'x': writer type long as timestamp-millis cannot be read as reader type int as date"]


def test_named_type_references_and_recursion() -> None:
    node = record("Node", f("value", "int"), f("next", ["null", "Node"], default=None))
    assert avro_incompatibilities(node, node) == []
    wider = record("Node", f("value", "long"), f("next", ["null", "Node"], default=None))
    assert avro_incompatibilities(wider, node) == []
    assert avro_incompatibilities(node, wider) == ["field 'value': writer type long cannot be read as reader type int"]
    money = json.dumps(record("Money", f("cents", "long"), namespace="shop"))
    uses = AvroSchema(json.dumps(record("Order", f("total", "shop.Money"), namespace="shop")), [money])
    assert avro_incompatibilities(uses, uses) == []
    validate(uses)
    with pytest.raises(ValueError, match="unknown type name"):
        avro_incompatibilities(record("Order", f("total", "shop.Money")), uses)


def test_validate_rejects_invalid_avro() -> None:
    validate(payment(f("amount", "double")))
    for bad in ('{"type": "record", "name": "R"}', '{"type": "nope"}', "not json"):
        with pytest.raises(ValueError):
            validate(bad)


V1 = record("P", f("a", "int"))
V2 = record("P", f("a", "int"), f("b", "string", default=""))  # adds a field with a default
V3 = record("P", f("a", "int"), f("c", "string"))  # adds a field without default


@pytest.mark.parametrize("level,new,previous,ok", [
    ("NONE", V3, [V1], True),
    ("BACKWARD", V2, [V1], True),
    ("BACKWARD", V3, [V1], False),   # new reader lacks a default for c
    ("FORWARD", V3, [V1], True),     # old reader ignores c
    ("FORWARD", record("P", f("b", "string")), [V1], False),  # old reader needs a, without default
    ("FULL", V2, [V1], True),
    ("FULL", V3, [V1], False),
    # non-transitive levels look at the latest version only; the transitive ones at all
    ("BACKWARD", record("P", f("c", "string", default="")), [V3, V2], True),
    ("BACKWARD_TRANSITIVE", record("P", f("b", "string")), [V1, V2], False),
    ("BACKWARD", record("P", f("b", "string")), [V1, V2], True),
    ("FORWARD_TRANSITIVE", V1, [record("P", f("a", "int"), f("z", "int")), V2], False),
    ("FORWARD", V1, [record("P", f("a", "int"), f("z", "int")), V2], True),
    ("FULL_TRANSITIVE", V2, [V1, V2], True),
    ("FULL_TRANSITIVE", V2, [V3, V2], False),
])
def test_levels(level: str, new: Any, previous: list[Any], ok: bool) -> None:
    assert (check_compatibility(level, new, previous) == []) is ok
    assert check_compatibility(level.lower(), new, []) == []


def test_level_messages_name_the_version_and_direction() -> None:
    assert check_compatibility("FULL", V3, [V1], labels=["version 7"]) == [
        "version 7 (backward: new schema reading old data): field 'c' is missing in the writer schema and has no "
        "default in the reader schema"]
    forward = check_compatibility("FORWARD", record("P", f("b", "string")), [V1, V2])
    assert forward == ["previous schema 2 (forward: old schema reading new data): field 'a' is missing in the "
                       "writer schema and has no default in the reader schema"]
    with pytest.raises(ValueError, match="unknown compatibility level 'SIDEWAYS'"):
        check_compatibility("sideways", V1, [V1])


def test_logical_types_must_agree_where_both_sides_have_one() -> None:
    from kappalake.formats.avro_compat import avro_incompatibilities

    def record(amount: dict, at: dict) -> dict:
        return {"type": "record", "name": "P", "fields": [{"name": "amount", "type": amount},
                                                          {"name": "at", "type": at}]}
    cents = {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    reader = record(cents, millis)
    assert avro_incompatibilities(reader, reader) == []
    problems = avro_incompatibilities(reader, record({**cents, "scale": 3}, {**millis, "logicalType": "timestamp-micros"}))
    assert problems == ["field 'amount': writer type bytes as decimal(12,3) cannot be read as reader type bytes as "
                        "decimal(12,2)", "field 'at': writer type long as timestamp-micros cannot be read as reader "
                        "type long as timestamp-millis"], problems
    assert avro_incompatibilities(reader, record("bytes", "long")) == []  # no logical type on the writer: by base type
