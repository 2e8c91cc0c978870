"""Just enough of the protobuf wire format to read the few messages a checkpoint holds.

A checkpoint's index stores BundleHeaderProto / BundleEntryProto records and its object graph
a TrackableObjectGraph; decoding their handful of fields here keeps TensorFlow and generated
protobuf classes out of the run-time dependencies.
"""

import struct
from collections import defaultdict

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
FIXED32 = 5


class WireFormatError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(data: bytes | memoryview, position: int) -> tuple[int, int]:
    """(value, position after it) of the base-128 varint at `position`."""
    value = 0
    shift = 0
    while True:
        if position >= len(data):
            raise WireFormatError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise WireFormatError("varint longer than 64 bits")


def parse_fields(data: bytes | memoryview) -> dict[int, list]:
    """Field number -> its values in order: ints for varint/fixed fields, bytes for
    length-delimited ones (sub-messages, strings, packed arrays)."""
    fields: dict[int, list] = defaultdict(list)
    position = 0
    while position < len(data):
        key, position = read_varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            value, position = read_varint(data, position)
        elif wire_type == FIXED64:
            value = struct.unpack_from("<Q", data, position)[0]
            position += 8
        elif wire_type == FIXED32:
            value = struct.unpack_from("<I", data, position)[0]
            position += 4
        elif wire_type == LENGTH_DELIMITED:
            length, position = read_varint(data, position)
            if position + length > len(data):
                raise WireFormatError(f"field {number} runs past the end of the message")
            value = bytes(data[position : position + length])
            position += length
        else:
            raise WireFormatError(f"field {number} has unsupported wire type {wire_type}")
        fields[number].append(value)
    if position != len(data):
        raise WireFormatError("message ends inside a field")
    return fields


def first(fields: dict[int, list], number: int, default=0):
    """The last value of a singular field (protobuf's rule when a field repeats), or default."""
    values = fields.get(number)
    return values[-1] if values else default
