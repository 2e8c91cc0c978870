"""A decoded file -> the 8-bit L or RGB image training takes, whatever mode it was stored in.

JPEG and PNG files come in more modes than L and RGB: 16-bit grayscale PNG (I;16), CMYK JPEG
(ImageNet's training set holds a few), palette, alpha. PIL's own convert() clips 16-bit values
at 255 instead of scaling them (a mostly white image), so 16-bit is scaled here by its high
byte first. With no image_mode set, a file keeps its channels: grey stays L, the rest is RGB
(a 4-channel CMYK or RGBA tensor would fit no model).
"""

import numpy as np
from PIL import Image

_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I"})
_GREY = frozenset({"L", "1", "LA"})


def to_training_mode(image: Image.Image, read_mode: str | None) -> Image.Image:
    """`image` as `read_mode` ("L" or "RGB"), or as L/RGB by its channels when None."""
    if image.mode in _SIXTEEN_BIT:
        high_byte = np.asarray(image).astype(np.uint32) >> 8
        image = Image.fromarray(np.clip(high_byte, 0, 255).astype(np.uint8))
    target = read_mode or ("L" if image.mode in _GREY else "RGB")
    return image.copy() if image.mode == target else image.convert(target)
