"""Fashion-MNIST, read offline from the Debian package ``dataset-fashion-mnist``.

Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017, https://github.com/zalandoresearch/fashion-mnist)
is 70,000 28x28 greyscale images of Zalando article pictures in 10 classes: 60,000 for training
and 10,000 for testing, 6,000 and 1,000 per class. Copyright (c) 2017 Zalando SE, MIT licence.

Debian ships the original four IDX files (gzip-compressed) in the package
``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist``:
``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``
and ``t10k-labels-idx1-ubyte.gz``. Without root, ``make data`` (``scripts/get-fashion-mnist.sh``)
downloads the package and unpacks it under ``.cache/datasets/fashion-mnist`` in the repository.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from simclrv2.datasets.idx import read_idx

CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

ENV_VAR = "SIMCLRV2_FASHION_MNIST"
SPLITS = ("train", "test")
# split -> (images file, labels file), as named in the package (a gunzipped copy works too).
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_PACKAGE_DIR = Path("usr/share/datasets/fashion-mnist")  # inside the .deb
_CACHE_DIR = Path(".cache/datasets/fashion-mnist")  # where the fetch script extracts the .deb
_REPO_ROOT = Path(__file__).resolve().parents[2]  # meaningful for a source checkout only

# Folders searched, in order, after an explicit root and the environment variable. A module-level
# tuple so that tests (or callers) can replace it.
SEARCH_PATHS: tuple[Path, ...] = (
    Path("/") / _PACKAGE_DIR,  # apt-get install dataset-fashion-mnist
    _CACHE_DIR / _PACKAGE_DIR,  # make data, run from the repository root
    _REPO_ROOT / _CACHE_DIR / _PACKAGE_DIR,  # make data, run from anywhere else
)

HOW_TO_GET = (
    "Get Fashion-MNIST (no internet download needed beyond the Debian archive) with one of:\n"
    "  make data                                (or scripts/get-fashion-mnist.sh; no root needed)\n"
    "  sudo apt-get install dataset-fashion-mnist\n"
    f"  export {ENV_VAR}=/folder/with/the/idx/files"
)


def _find_file(folder: Path, name: str) -> Path | None:
    """``folder/name``, or its gunzipped twin ``folder/name`` without ``.gz``."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing(folder: Path) -> list[str]:
    return [name for pair in FILES.values() for name in pair if _find_file(folder, name) is None]


def _resolve(folder: Path) -> Path | None:
    """``folder`` if it holds the four files; also accepts the root of an extracted .deb."""
    for candidate in (folder, folder / _PACKAGE_DIR):
        if candidate.is_dir() and not _missing(candidate):
            return candidate
    return None


def find_fashion_mnist(root: str | Path | None = None) -> Path:
    """The folder holding the four Fashion-MNIST IDX files.

    Search order: ``root`` if given, else the ``SIMCLRV2_FASHION_MNIST`` environment variable if
    set (either one, when given, is the only place looked at), else ``SEARCH_PATHS``:
    ``/usr/share/datasets/fashion-mnist`` and ``.cache/datasets/fashion-mnist/usr/share/datasets/
    fashion-mnist`` (relative to the working directory, then to the repository). A folder that
    holds an extracted .deb (``usr/share/datasets/fashion-mnist`` inside it) works too.

    Raises ``FileNotFoundError`` explaining how to get the data if no folder holds all four files.
    """
    if root is not None or os.environ.get(ENV_VAR):
        source = "root" if root is not None else f"${ENV_VAR}"
        folder = Path(root if root is not None else os.environ[ENV_VAR]).expanduser()
        found = _resolve(folder)
        if found is not None:
            return found
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {folder} ({source}): missing "
            f"{', '.join(_missing(folder)) if folder.is_dir() else 'the folder itself'}.\n"
            + HOW_TO_GET
        )
    for folder in SEARCH_PATHS:
        found = _resolve(Path(folder))
        if found is not None:
            return found
    raise FileNotFoundError(
        "Fashion-MNIST not found; looked in: "
        + ", ".join(str(p) for p in SEARCH_PATHS)
        + f" (and ${ENV_VAR} is not set).\n"
        + HOW_TO_GET
    )


def load_fashion_mnist(
    split: str = "train", root: str | Path | None = None, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split as ``(images, labels)``.

    ``images`` is uint8 of shape (N, 1, 28, 28) (pixels 0-255, 0 = background), ``labels`` int64
    of shape (N,) with values 0-9 indexing ``CLASSES``. ``split`` is ``"train"`` (N = 60,000) or
    ``"test"`` (N = 10,000). ``root`` is passed to ``find_fashion_mnist``. ``limit``, if given,
    keeps only the first ``limit`` examples (in file order, so the classes are roughly but not
    exactly balanced); it is meant for fast tests and smoke runs. The whole file is still read.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    folder = find_fashion_mnist(root)
    images_name, labels_name = FILES[split]
    images_path = _find_file(folder, images_name)
    labels_path = _find_file(folder, labels_name)
    assert images_path is not None and labels_path is not None  # find_fashion_mnist checked
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != "uint8":
        raise ValueError(f"{images_path}: expected uint8 images (N, 28, 28), got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(
            f"{labels_path}: expected {images.shape[0]} labels (one per image), "
            f"got shape {labels.shape}"
        )
    if limit is not None:
        # Copies, so that the full arrays are freed.
        images, labels = images[:limit].copy(), labels[:limit].copy()
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype("int64"))


class TensorImageDataset(Dataset):
    """``(image, label)`` pairs from an image tensor, with an optional per-image transform.

    ``images`` is (N, C, H, W) (e.g. the uint8 output of ``load_fashion_mnist``), ``labels`` (N,).
    Item ``i`` is ``(transform(images[i]), int(labels[i]))``, or the raw image without a
    transform. Picklable (for DataLoader workers) as long as the transform is.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
