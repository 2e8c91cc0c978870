"""IDX reader, Fashion-MNIST loader (real data from the Debian package) and TensorImageDataset."""

import gzip
import pickle
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from simclrv2.datasets import fashion_mnist
from simclrv2.datasets.fashion_mnist import (
    CLASSES,
    TensorImageDataset,
    find_fashion_mnist,
    load_fashion_mnist,
)
from simclrv2.datasets.idx import read_idx

REPO_ROOT = Path(__file__).resolve().parents[1]
FETCH_SCRIPT = REPO_ROOT / "scripts" / "get-fashion-mnist.sh"


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, compress: bool) -> Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


# --- read_idx ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_images_and_labels(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    suffix = ".gz" if compress else ""
    images_path = write(tmp_path / f"images{suffix}", idx_bytes(images, 0x08), compress)
    labels_path = write(tmp_path / f"labels{suffix}", idx_bytes(labels, 0x08), compress)

    got = read_idx(images_path)
    assert got.dtype == np.uint8 and got.shape == (5, 4, 3)
    np.testing.assert_array_equal(got, images)
    assert got.flags.writeable
    np.testing.assert_array_equal(read_idx(str(labels_path)), labels)


@pytest.mark.parametrize(
    ("type_code", "dtype"),
    [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)],
)
def test_read_idx_other_dtypes_are_big_endian(tmp_path, type_code, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype) * 3
    got = read_idx(write(tmp_path / "a.idx", idx_bytes(array, type_code), compress=False))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_read_idx_truncated(tmp_path):
    data = idx_bytes(np.zeros((10, 28, 28), np.uint8), 0x08)
    path = write(tmp_path / "short-idx3-ubyte", data[:-1], compress=False)
    with pytest.raises(ValueError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)

    with pytest.raises(ValueError, match="truncated header"):
        read_idx(write(tmp_path / "header", data[:10], compress=False))
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(write(tmp_path / "long", data + b"\0", compress=False))


def test_read_idx_truncated_gzip(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8).reshape(10, 100), 0x08))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("magic", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"PK\x03\x04"])
def test_read_idx_bad_magic(tmp_path, magic):
    path = write(tmp_path / "bad", magic + struct.pack(">I", 1) + b"\0", compress=False)
    with pytest.raises(ValueError, match="bad magic number") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# --- find_fashion_mnist -----------------------------------------------------------------------


def test_find_fashion_mnist_missing_gives_instructions(tmp_path, monkeypatch):
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    monkeypatch.setattr(fashion_mnist, "SEARCH_PATHS", (tmp_path / "nowhere",))
    with pytest.raises(FileNotFoundError) as info:
        find_fashion_mnist()
    message = str(info.value)
    for hint in ("make data", "get-fashion-mnist.sh", "apt-get install dataset-fashion-mnist"):
        assert hint in message
    assert fashion_mnist.ENV_VAR in message
    assert str(tmp_path / "nowhere") in message


def test_find_fashion_mnist_bad_root_or_env(tmp_path, monkeypatch):
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match="make data") as info:
        find_fashion_mnist(tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(info.value)

    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=fashion_mnist.ENV_VAR):
        find_fashion_mnist()


def test_find_fashion_mnist_uses_env_and_gunzipped_files(tmp_path, monkeypatch):
    # A folder of tiny, uncompressed look-alike files: found through the environment variable.
    for split_files in fashion_mnist.FILES.values():
        for name in split_files:
            shape = (3, 28, 28) if "images" in name else (3,)
            array = np.full(shape, 7, dtype=np.uint8)
            write(tmp_path / name.removesuffix(".gz"), idx_bytes(array, 0x08), compress=False)
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path))
    monkeypatch.setattr(fashion_mnist, "SEARCH_PATHS", ())
    assert find_fashion_mnist() == tmp_path
    images, labels = load_fashion_mnist("test")
    assert images.shape == (3, 1, 28, 28) and labels.tolist() == [7, 7, 7]


# --- real Fashion-MNIST -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_root():
    # Idempotent: returns at once when the data is already present.
    subprocess.run([str(FETCH_SCRIPT)], check=True, timeout=600)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(fashion_mnist.ENV_VAR, raising=False)
        return find_fashion_mnist()


@pytest.fixture(scope="module")
def train(data_root):
    return load_fashion_mnist("train", root=data_root)


@pytest.fixture(scope="module")
def test_split(data_root):
    return load_fashion_mnist("test", root=data_root)


def test_classes():
    assert len(CLASSES) == 10
    assert CLASSES[0] == "T-shirt/top" and CLASSES[9] == "Ankle boot"


@pytest.mark.parametrize(("split", "n"), [("train", 60_000), ("test", 10_000)])
def test_real_data(request, split, n):
    images, labels = request.getfixturevalue("train" if split == "train" else "test_split")
    assert images.shape == (n, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert images.min() == 0 and images.max() == 255
    assert torch.bincount(labels, minlength=10).tolist() == [n // 10] * 10


def test_limit(data_root, test_split):
    images, labels = load_fashion_mnist("test", root=data_root, limit=100)
    assert images.shape == (100, 1, 28, 28) and labels.shape == (100,)
    assert torch.equal(images, test_split[0][:100]) and torch.equal(labels, test_split[1][:100])
    assert load_fashion_mnist("test", root=data_root, limit=0)[0].shape == (0, 1, 28, 28)


def test_find_accepts_extracted_package_root(data_root):
    # .../usr/share/datasets/fashion-mnist -> the folder the .deb was extracted into (or /).
    assert find_fashion_mnist(data_root.parents[3]) == data_root


def test_bad_split(data_root):
    with pytest.raises(ValueError, match=r"'train', 'test'"):
        load_fashion_mnist("validation", root=data_root)


# --- TensorImageDataset -----------------------------------------------------------------------


def to_float(image: torch.Tensor) -> torch.Tensor:
    # Module-level, so that the dataset holding it pickles.
    return image.float() / 255


def test_tensor_image_dataset():
    images = torch.arange(4 * 1 * 2 * 2, dtype=torch.uint8).reshape(4, 1, 2, 2)
    labels = torch.tensor([0, 3, 9, 1])

    raw = TensorImageDataset(images, labels)
    assert len(raw) == 4
    image, label = raw[1]
    assert torch.equal(image, images[1]) and label == 3 and isinstance(label, int)

    dataset = TensorImageDataset(images, labels, transform=to_float)
    image, label = dataset[2]
    assert image.dtype == torch.float32 and torch.allclose(image, images[2].float() / 255)
    assert label == 9

    clone = pickle.loads(pickle.dumps(dataset))
    assert len(clone) == 4 and torch.equal(clone[2][0], image) and clone[2][1] == 9

    batch_images, batch_labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch_images.shape == (4, 1, 2, 2) and batch_labels.tolist() == [0, 3, 9, 1]

    with pytest.raises(ValueError, match="4 images but 3 labels"):
        TensorImageDataset(images, labels[:3])
