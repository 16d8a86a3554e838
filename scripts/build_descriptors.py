"""Build conf/schemas/payment.desc, the binary FileDescriptorSet of conf/schemas/payment.proto.

There is no protoc on the build machines, so the descriptor is written here with ``descriptor_pb2``:
exactly what ``protoc --include_imports --descriptor_set_out=payment.desc payment.proto`` writes
(checked byte for byte against protoc 1.85 / grpcio-tools), i.e. the imported
google/protobuf/timestamp.proto first, then payment.proto with protoc's ``json_name`` values.

    python scripts/build_descriptors.py           # rewrite conf/schemas/payment.desc
    python scripts/build_descriptors.py --check   # exit 1 when the committed file differs

Change payment.proto and the field list below together; a unit test holds the three in step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2, timestamp_pb2

SCHEMAS = Path(__file__).resolve().parents[1] / "conf" / "schemas"
OUTPUT = SCHEMAS / "payment.desc"
_F = descriptor_pb2.FieldDescriptorProto

#: payment.proto's Payment fields: (name, number, type, message type name or None).
PAYMENT_FIELDS: list[tuple[str, int, int, str | None]] = [
    ("event_id", 1, _F.TYPE_STRING, None),
    ("card_id", 2, _F.TYPE_STRING, None),
    ("merchant_id", 3, _F.TYPE_STRING, None),
    ("amount", 4, _F.TYPE_STRING, None),
    ("currency", 5, _F.TYPE_STRING, None),
    ("country", 6, _F.TYPE_STRING, None),
    ("event_time", 7, _F.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
]


def json_name(name: str) -> str:
    """protoc's default JSON name: snake_case -> lowerCamelCase."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def payment_file() -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto of payment.proto."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="payment.proto", package="kappalake.payments",
        dependency=["google/protobuf/timestamp.proto"], syntax="proto3")
    message = proto.message_type.add(name="Payment")
    for name, number, type_, type_name in PAYMENT_FIELDS:
        field = message.field.add(name=name, number=number, label=_F.LABEL_OPTIONAL, type=type_)
        if type_name is not None:
            field.type_name = type_name
        field.json_name = json_name(name)
    return proto


def build() -> bytes:
    """The serialized FileDescriptorSet: timestamp.proto (as shipped with protobuf), then payment.proto."""
    timestamp = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(timestamp)
    return descriptor_pb2.FileDescriptorSet(file=[timestamp, payment_file()]).SerializeToString()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed file")
    args = parser.parse_args(argv)
    data = build()
    if args.check:
        same = OUTPUT.is_file() and OUTPUT.read_bytes() == data
        print(f"{OUTPUT}: {'up to date' if same else 'differs from the build'}")
        return 0 if same else 1
    OUTPUT.write_bytes(data)
    print(f"wrote {OUTPUT} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
