"""Reader for the IDX file format of MNIST and Fashion-MNIST (plain or gzip-compressed).

The format (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS FOR THE MNIST DATABASE"):

- a 4-byte magic number: two zero bytes, a type code, the number of dimensions;
- one big-endian unsigned 32-bit size per dimension;
- the data, big-endian, C (row-major) order, nothing after it.

Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
"""

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    with path.open("rb") as f:
        data = f.read()
    # Detect compression by content, not by the name: a gunzipped file may keep ".gz" or not.
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:  # BadGzipFile is an OSError
        raise ValueError(f"{path}: corrupt or truncated gzip data ({e})") from e


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a native-endian, writable array.

    The array has the file's dtype (see ``IDX_DTYPES``) and shape (one axis per header
    dimension). Raises ``FileNotFoundError`` if the file does not exist and ``ValueError``
    naming the file and the problem if the magic number is bad, the header is short or the
    data size does not match the header (truncated file or trailing bytes).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file: only {len(data)} bytes, no 4-byte magic number")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_DTYPES:
        raise ValueError(
            f"{path}: bad magic number 0x{data[:4].hex()}: expected 0x0000TTNN with type code TT "
            f"in {{{', '.join(f'{c:02x}' for c in IDX_DTYPES)}}} and NN dimensions "
            f"(is it an IDX file?)"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(
            f"{path}: truncated header: {ndim} dimensions need {header_size} bytes, "
            f"file has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = IDX_DTYPES[type_code]
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected:
        raise ValueError(
            f"{path}: truncated: header says shape {shape} of {dtype.name} "
            f"({expected} bytes in all), file has {len(data)} bytes"
        )
    if len(data) > expected:
        raise ValueError(
            f"{path}: {len(data) - expected} unexpected trailing bytes after the data "
            f"(header says shape {shape} of {dtype.name}, {expected} bytes in all)"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    # A native-endian copy: writable (torch.from_numpy warns on read-only arrays) and fast.
    return array.astype(dtype.newbyteorder("="), copy=True)
