"""Reader of the sorted key-value table format of a checkpoint's `.index` file.

TensorFlow's table is LevelDB's: data blocks of prefix-compressed entries with restart points,
an index block that maps the last key of each data block to its (offset, size), a footer with
the index block's handle and a magic number. Every block is followed by a compression byte and
the masked CRC-32C of the block and that byte, which this reader checks.
"""

import struct
from collections.abc import Iterator

from simclrv2.tf_import.crc32c import crc32c, mask
from simclrv2.tf_import.protobuf_wire import WireFormatError, read_varint

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type + masked CRC-32C
NO_COMPRESSION = 0


class TableFormatError(ValueError):
    """The index file is not a table, or one of its blocks fails its checksum."""


def _block_handle(data: bytes, position: int) -> tuple[int, int, int]:
    """(offset, size, position after the handle)."""
    offset, position = read_varint(data, position)
    size, position = read_varint(data, position)
    return offset, size, position


def _block(data: bytes, offset: int, size: int, name: str) -> bytes:
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(data):
        raise TableFormatError(f"{name}: a block runs past the end of the file (truncated?)")
    compression = data[end]
    stored = struct.unpack_from("<I", data, end + 1)[0]
    if mask(crc32c(data[offset : end + 1])) != stored:
        raise TableFormatError(f"{name}: a block fails its CRC-32C checksum (corrupt file)")
    if compression != NO_COMPRESSION:
        raise TableFormatError(
            f"{name}: the index uses block compression {compression}; TensorFlow writes "
            "checkpoint indexes uncompressed, so this is not a checkpoint index"
        )
    return data[offset:end]


def _block_entries(block: bytes, name: str) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise TableFormatError(f"{name}: a block is too short to hold its restart count")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    entries_end = len(block) - 4 - 4 * num_restarts
    if entries_end < 0:
        raise TableFormatError(f"{name}: a block's restart array is larger than the block")
    key = b""
    position = 0
    while position < entries_end:
        shared, position = read_varint(block, position)
        unshared, position = read_varint(block, position)
        value_size, position = read_varint(block, position)
        if shared > len(key) or position + unshared + value_size > entries_end:
            raise TableFormatError(f"{name}: a block entry is malformed")
        key = key[:shared] + block[position : position + unshared]
        position += unshared
        yield key, block[position : position + value_size]
        position += value_size


def read_table(data: bytes, name: str) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of the table in `data`, in key order; `name` is used in errors."""
    if len(data) < FOOTER_SIZE:
        raise TableFormatError(f"{name} is too short to be a TensorFlow checkpoint index")
    footer = data[-FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)[0] != TABLE_MAGIC:
        raise TableFormatError(
            f"{name} is not a TensorFlow checkpoint index (no table magic number at its end)"
        )
    try:
        _, _, position = _block_handle(footer, 0)  # the metaindex block: always empty here
        index_offset, index_size, _ = _block_handle(footer, position)
        index = _block(data, index_offset, index_size, name)
        for _, handle in _block_entries(index, name):
            offset, size, _ = _block_handle(handle, 0)
            yield from _block_entries(_block(data, offset, size, name), name)
    except WireFormatError as error:
        raise TableFormatError(f"{name}: malformed table ({error})") from error
