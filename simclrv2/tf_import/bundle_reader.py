"""Reader of TensorFlow's tensor-bundle checkpoint format, without TensorFlow.

A checkpoint `PREFIX` is `PREFIX.index`, a table (table_file.py) whose empty key holds a
BundleHeaderProto (number of data shards, byte order) and whose other keys are tensor names
with a BundleEntryProto each (dtype, shape, shard, offset, size, masked CRC-32C), and the data
shards `PREFIX.data-00000-of-0000N` that hold the raw little-endian tensor bytes. TF1
(`model.ckpt-N`), TF2 (`ckpt-N`) checkpoints and a SavedModel's `variables/variables` all use it.
Every tensor read is checked against its entry's size and checksum.
"""

import os
import struct
from dataclasses import dataclass

import numpy as np
import torch

from simclrv2.errors import UsageError
from simclrv2.tf_import.crc32c import crc32c, mask
from simclrv2.tf_import.protobuf_wire import WireFormatError, first, parse_fields, read_varint
from simclrv2.tf_import.table_file import TableFormatError, read_table

# TensorFlow DataType enum values -> numpy dtypes (little-endian, as the bundle stores them).
NUMPY_DTYPES = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    14: np.dtype("<u2"),  # DT_BFLOAT16: read as raw 16-bit words, viewed as bfloat16 below
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
DT_STRING = 7
DT_BFLOAT16 = 14
DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8",
               7: "string", 9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16",
               19: "float16", 22: "uint32", 23: "uint64"}  # fmt: skip
LITTLE_ENDIAN = 0


class CheckpointFormatError(UsageError):
    """The checkpoint files are not a readable tensor bundle, or fail their checksums."""


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives: BundleEntryProto's fields."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int
    sliced: bool

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, f"TensorFlow dtype {self.dtype}")


def _shape(shape_proto: bytes) -> tuple[int, ...]:
    fields = parse_fields(shape_proto)
    return tuple(first(parse_fields(dim), 1) for dim in fields.get(2, []))


def _entry(value: bytes) -> BundleEntry:
    fields = parse_fields(value)
    return BundleEntry(
        dtype=first(fields, 1),
        shape=_shape(first(fields, 2, b"")),
        shard=first(fields, 3),
        offset=first(fields, 4),
        size=first(fields, 5),
        crc32c=first(fields, 6),
        sliced=bool(fields.get(7)),
    )


class TensorBundle:
    """The tensors of the checkpoint at a local `prefix` (the path without `.index`)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        index_path = f"{prefix}.index"
        if not os.path.isfile(index_path):
            raise FileNotFoundError(
                f"no checkpoint index {index_path}: pass the checkpoint prefix (e.g. "
                "model.ckpt-250228 or ckpt-10, without .index) or its directory"
            )
        with open(index_path, "rb") as file:
            data = file.read()
        name = os.path.basename(index_path)
        self.entries: dict[str, BundleEntry] = {}
        self.num_shards = 1
        try:
            for key, value in read_table(data, name):
                if key.startswith(b"\x00"):
                    continue  # one slice of a partitioned tensor (see read); not a name
                if key == b"":
                    header = parse_fields(value)
                    self.num_shards = first(header, 1, 1)
                    if first(header, 2) != LITTLE_ENDIAN:
                        raise CheckpointFormatError(
                            f"{name} was written on a big-endian machine; only little-endian "
                            "checkpoints (every released one) are supported"
                        )
                else:
                    self.entries[key.decode("utf-8")] = _entry(value)
        except (TableFormatError, WireFormatError, UnicodeDecodeError) as error:
            raise CheckpointFormatError(
                f"{prefix} is not a readable checkpoint: {error}"
            ) from error
        self._check_shards()

    def shard_path(self, shard: int) -> str:
        return f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}"

    def _check_shards(self) -> None:
        for shard in sorted({entry.shard for entry in self.entries.values()}):
            if shard >= self.num_shards:
                raise CheckpointFormatError(
                    f"{self.prefix}.index names data shard {shard} of {self.num_shards}"
                )
            if not os.path.isfile(self.shard_path(shard)):
                raise FileNotFoundError(
                    f"checkpoint data file {self.shard_path(shard)} is missing: copy every "
                    f"{os.path.basename(self.prefix)}.data-* file beside the .index"
                )

    def names(self) -> list[str]:
        return sorted(self.entries)

    def _raw(self, key: str, entry: BundleEntry) -> bytes:
        with open(self.shard_path(entry.shard), "rb") as file:
            file.seek(entry.offset)
            data = file.read(entry.size)
        if len(data) != entry.size:
            raise CheckpointFormatError(
                f"{self.shard_path(entry.shard)} is truncated: tensor {key!r} needs bytes "
                f"{entry.offset}..{entry.offset + entry.size}"
            )
        return data

    def _corrupt(self, key: str, entry: BundleEntry) -> CheckpointFormatError:
        return CheckpointFormatError(
            f"tensor {key!r} in {self.shard_path(entry.shard)} fails its CRC-32C checksum: "
            "the data file is corrupt or belongs to another checkpoint; copy it again"
        )

    def read(self, key: str) -> torch.Tensor:
        """A numeric tensor, checked against its checksum, as a CPU torch tensor."""
        entry = self.entries[key]
        if entry.sliced:
            raise CheckpointFormatError(
                f"tensor {key!r} is stored in slices (a partitioned variable), which the "
                "released SimCLRv2 checkpoints do not use; this reader does not join slices"
            )
        if entry.dtype not in NUMPY_DTYPES:
            raise CheckpointFormatError(f"tensor {key!r} has unsupported {entry.dtype_name}")
        dtype = NUMPY_DTYPES[entry.dtype]
        expected = int(np.prod(entry.shape, dtype=np.int64)) * dtype.itemsize
        if entry.size != expected:
            raise CheckpointFormatError(
                f"tensor {key!r}: the index gives {entry.size} bytes for shape "
                f"{list(entry.shape)} of {entry.dtype_name} ({expected} expected)"
            )
        data = self._raw(key, entry)
        if mask(crc32c(data)) != entry.crc32c:
            raise self._corrupt(key, entry)
        array = np.frombuffer(data, dtype=dtype).reshape(entry.shape).copy()
        tensor = torch.from_numpy(array)
        return tensor.view(torch.bfloat16) if entry.dtype == DT_BFLOAT16 else tensor

    def read_strings(self, key: str) -> list[bytes]:
        """A string tensor (e.g. the TF2 object graph) as a flat list of byte strings.

        Layout: the element lengths as varints, the masked CRC-32C of those lengths (each
        taken as a little-endian uint32, or uint64 from 4 GiB on), then the bytes of every
        element; the entry's checksum covers the lengths, their checksum and the bytes."""
        entry = self.entries[key]
        if entry.dtype != DT_STRING:
            raise CheckpointFormatError(f"tensor {key!r} is {entry.dtype_name}, not string")
        data = self._raw(key, entry)
        count = int(np.prod(entry.shape, dtype=np.int64))
        lengths, position, crc = [], 0, 0
        try:
            for _ in range(count):
                length, position = read_varint(data, position)
                lengths.append(length)
                crc = crc32c(struct.pack("<I" if length < 2**32 else "<Q", length), crc)
        except WireFormatError as error:
            raise self._corrupt(key, entry) from error
        stored_lengths_crc = data[position : position + 4]
        if len(stored_lengths_crc) != 4 or struct.unpack("<I", stored_lengths_crc)[0] != mask(crc):
            raise self._corrupt(key, entry)
        crc = crc32c(stored_lengths_crc, crc)
        position += 4
        values = []
        for length in lengths:
            values.append(data[position : position + length])
            position += length
        crc = crc32c(data[position - sum(lengths) : position], crc)
        if position != len(data) or mask(crc) != entry.crc32c:
            raise self._corrupt(key, entry)
        return values
