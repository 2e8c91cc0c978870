"""CRC-32C (Castagnoli) as TensorFlow's checkpoint files use it, masked or not."""

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def crc32c(data: bytes | memoryview, initial: int = 0) -> int:
    """CRC-32C of `data`, continuing from the CRC `initial` of the bytes before it."""
    return (
        google_crc32c.extend(initial, bytes(data)) if initial else google_crc32c.value(bytes(data))
    )


def mask(crc: int) -> int:
    """TensorFlow stores checksums masked (rotated and offset), so a CRC of bytes that hold a
    CRC is not trivially zero."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF
