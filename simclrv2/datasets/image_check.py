"""The shard step's check of one image file: it decodes, and it is not a decompression bomb.

Shards store files as they are (never re-encoded), so a file that cannot be decoded would
otherwise surface only in training, where the loader skips it (up to data.max_corrupt_fraction)
far from the file's name. Checked here, the user learns which file to fix before any dataset
exists. JPEGs decode in draft mode (1/8 scale): every byte of the compressed stream is still
read, so truncation is caught, at a fraction of a full decode's cost.
"""

import io
import re
import warnings

from PIL import Image, UnidentifiedImageError

from simclrv2.errors import UsageError


class BadImageError(UsageError):
    """An image file that training could not use."""


def check_image(data: bytes, name: str) -> None:
    """BadImageError naming `name` unless `data` decodes as an image of sane size."""
    with warnings.catch_warnings():
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; both are refused here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format == "JPEG":
                    image.draft(image.mode, (image.width // 8 or 1, image.height // 8 or 1))
                image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            pixels = re.search(r"\((\d+) pixels\)", str(error))
            size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
            raise BadImageError(
                f"{name} has {size}, more than the {Image.MAX_IMAGE_PIXELS:,} an image may "
                "have (a decompression bomb, or a scan far larger than training needs): "
                "downscale it"
            ) from None
        except UnidentifiedImageError:
            raise BadImageError(
                f"{name} is not a JPEG or PNG image despite its name: delete it or "
                "replace it with the real image"
            ) from None
        except Exception as error:  # whatever the decoder raises is about these bytes
            raise BadImageError(
                f"{name} cannot be decoded ({error}): it is truncated or corrupt; "
                "re-download or delete it"
            ) from None
