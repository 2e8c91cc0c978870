"""Encoded image files in the ImageNet folder layout, on a local disk or in S3.

The layout::

    root/train/<class>/<image>.{jpg,jpeg,png}     (any case: .JPEG, .PNG, ...)
    root/val/<class>/<image>...   or   root/test/<class>/<image>...

The test split is read from ``val`` or ``test``, whichever exists. Class names are the sorted
folder names of ``train``; the test split's classes must be among them. Files are returned
exactly as stored (no re-encoding). Anything else (other file types, hidden entries, files
outside class folders, nested folders) is ignored, with a debug log line.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from simclrv2.datasets.image_check import check_image
from simclrv2.datasets.image_source import ImageRecord

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png"})
TEST_FOLDERS: tuple[str, ...] = ("val", "test")  # the folder that holds the "test" split

# (path relative to the split folder, size in bytes, ref). A path ending in "/" is a folder: local
# listings report class folders this way (so that empty ones are seen), S3 may hold such markers.
_Entry = tuple[str, int, str]


class ObjectStoreLike(Protocol):
    """What this source needs from an object store (``simclrv2.storage.object_store``)."""

    def list_files(self, prefix_uri: str) -> list[tuple[str, int]]:
        """``(uri, size)`` of every object under ``prefix_uri``."""
        ...

    def read_bytes(self, uri: str) -> bytes:
        """The whole object."""
        ...


@dataclass(frozen=True)
class _Listing:
    """Everything one scan of the tree finds."""

    class_names: list[str]
    test_folder: str
    records: dict[str, list[ImageRecord]]
    fingerprint: str


def record_key(relative_path: str) -> str:
    """A WebDataset-safe key from a path relative to the split folder: extension dropped, then
    "/" and "." replaced by "_" (``"n01/n01_10026.JPEG"`` -> ``"n01_n01_10026"``)."""
    stem = relative_path.rsplit(".", 1)[0]
    return stem.replace("/", "_").replace(".", "_")


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _check_names(where: str, classes: dict[str, list[_Entry]]) -> None:
    """Refuse names that would break later: non-UTF-8 bytes (S3 keys, tar member names and
    JSON metadata are UTF-8; Python keeps such bytes as lone surrogates that fail when
    written) and class folders that differ only in case (two classes here, one folder on
    macOS or Windows: almost always one class spelt twice)."""
    used = [*classes, *(relative for files in classes.values() for relative, _, _ in files)]
    undecodable = sorted(name for name in used if not _is_utf8(name))
    if undecodable:
        shown = ", ".join(repr(os.fsencode(name)) for name in undecodable[:3])
        raise ValueError(
            f"{len(undecodable)} name(s) in {where} are not valid UTF-8, e.g. {shown}: rename "
            "them to UTF-8, e.g. `convmv -f latin1 -t utf8 -r --notest <folder>`"
        )
    by_lower: dict[str, list[str]] = {}
    for name in classes:
        by_lower.setdefault(name.lower(), []).append(name)
    clashes = sorted(sorted(names) for names in by_lower.values() if len(names) > 1)
    if clashes:
        spelt = " and ".join(repr(name) for name in clashes[0])
        raise ValueError(
            f"class folders {spelt} in {where} differ only in case: merge them into one "
            "folder, or rename one if they really are different classes"
        )


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.listdir keeps undecodable bytes as lone surrogates
        return False
    return True


class ImageFolderSource:
    """An ``ImageSource`` over ``root`` in the ImageNet layout (see the module docstring).

    ``root`` is a local folder, or ``s3://bucket/prefix`` read through ``store`` (an object with
    ``list_files(prefix_uri) -> [(uri, size)]`` and ``read_bytes(uri) -> bytes``, such as
    ``simclrv2.storage.object_store.ObjectStore``; it must be picklable for the source to be).
    The tree is listed once at construction, which validates it: ``FileNotFoundError`` for a
    missing root or split folder, ``ValueError`` for both ``val`` and ``test``, an empty class
    folder, test classes absent from train or two files with the same key.
    """

    splits: tuple[str, ...] = SPLITS

    def __init__(self, root: str | os.PathLike[str], store: ObjectStoreLike | None = None) -> None:
        root = os.fspath(root)
        if root.startswith("s3://"):
            if store is None:
                raise ValueError(f"{root}: an s3:// root needs a store (e.g. ObjectStore(...))")
            self.root = root.rstrip("/")
        else:
            if store is not None:
                raise ValueError(f"{root}: store is for s3:// roots only; local files use open()")
            self.root = str(Path(root).expanduser().resolve())
            if not Path(self.root).is_dir():
                raise FileNotFoundError(f"image folder root {self.root} does not exist")
        self.store = store
        self.description = f"imagefolder:{self.root}"
        listing = self._scan()
        self.class_names: list[str] = listing.class_names
        self.test_folder = listing.test_folder  # "val" or "test": where the test split is read
        self._fingerprint = listing.fingerprint
        self._listing: _Listing | None = listing

    def __getstate__(self) -> dict[str, Any]:
        # The listing can be millions of records: workers that only read() should not receive it.
        state = self.__dict__.copy()
        state["_listing"] = None
        return state

    def records(self, split: str) -> list[ImageRecord]:
        """The split's image files, sorted by key."""
        self._check_split(split)
        if self._listing is None:  # unpickled: list again
            listing = self._scan()
            if listing.class_names != self.class_names:
                raise RuntimeError(f"{self.description}: the classes changed since it was opened")
            self._listing = listing
        return list(self._listing.records[split])

    def read(self, split: str, record: ImageRecord) -> tuple[bytes, str]:
        """The file's bytes exactly as stored, and its lower-case extension; BadImageError
        when they do not decode (image_check.py)."""
        self._check_split(split)
        if self.store is not None:
            data = self.store.read_bytes(str(record.ref))
        else:
            with open(record.ref, "rb") as f:
                data = f.read()
        check_image(data, str(record.ref))
        return data, _extension(record.filename)

    def fingerprint(self) -> str:
        """sha256 over the sorted (path relative to root, size) of every image file: cheap (no
        content is read), but blind to an in-place edit that keeps a file's size."""
        return self._fingerprint

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")

    def _folder_uri(self, folder: str) -> str:
        return f"{self.root}/{folder}"

    def _list(self, folder: str) -> list[_Entry] | None:
        """The entries of ``root/folder``, or None if it does not exist."""
        if self.store is not None:
            return self._list_store(folder)
        return self._list_local(folder)

    def _list_local(self, folder: str) -> list[_Entry] | None:
        split_dir = Path(self.root) / folder
        if not split_dir.is_dir():
            return None
        entries: list[_Entry] = []
        with os.scandir(split_dir) as top:
            for entry in top:
                if not entry.is_dir():
                    entries.append((entry.name, 0, entry.path))
                    continue
                entries.append((entry.name + "/", 0, entry.path))
                with os.scandir(entry.path) as inner:
                    for item in inner:
                        if item.is_dir():
                            entries.append((f"{entry.name}/{item.name}/", 0, item.path))
                        else:
                            size = item.stat().st_size
                            entries.append((f"{entry.name}/{item.name}", size, item.path))
        return entries

    def _list_store(self, folder: str) -> list[_Entry] | None:
        assert self.store is not None
        prefix = self._folder_uri(folder) + "/"
        entries: list[_Entry] = []
        for uri, size in self.store.list_files(prefix):
            if not uri.startswith(prefix):
                raise ValueError(f"listing {prefix} returned {uri}, which is outside it")
            entries.append((uri[len(prefix) :], int(size), uri))
        # S3 has no folders: a prefix without objects does not exist.
        return entries or None

    def _group(self, folder: str, entries: list[_Entry]) -> dict[str, list[_Entry]]:
        """Image entries of ``root/folder`` by class folder (class names sorted, files sorted)."""
        classes: dict[str, list[_Entry]] = {}
        where = self._folder_uri(folder)
        for relative, size, ref in entries:
            is_folder = relative.endswith("/")
            parts = relative.rstrip("/").split("/")
            if any(part.startswith(".") for part in parts):
                logger.debug("ignoring hidden entry %s/%s", where, relative)
                continue
            if len(parts) == 1:
                if is_folder:
                    classes.setdefault(parts[0], [])
                else:
                    logger.debug("ignoring %s/%s: not in a class folder", where, relative)
                continue
            files = classes.setdefault(parts[0], [])
            if is_folder or len(parts) > 2:
                logger.debug("ignoring %s/%s: nested inside a class folder", where, relative)
            elif _extension(parts[1]) not in IMAGE_EXTENSIONS:
                logger.debug("ignoring %s/%s: not a jpg/jpeg/png file", where, relative)
            else:
                files.append((relative, size, ref))
        if not classes:
            raise ValueError(f"{where} has no class folders (expected {where}/<class>/<image>)")
        for name, files in classes.items():
            if not files:
                raise ValueError(
                    f"class folder {where}/{name} holds no jpg/jpeg/png images: add some or "
                    f"remove the folder (every folder in {folder}/ is a class)"
                )
            files.sort()
        _check_names(where, classes)
        return dict(sorted(classes.items()))

    def _scan(self) -> _Listing:
        train_entries = self._list("train")
        if train_entries is None:
            raise FileNotFoundError(f"{self._folder_uri('train')} not found (the train split)")
        found = {name: self._list(name) for name in TEST_FOLDERS}
        present = [name for name, entries in found.items() if entries is not None]
        if not present:
            raise FileNotFoundError(
                f"{self.root}: neither val/ nor test/ found; one of them must hold the test split"
            )
        if len(present) > 1:
            raise ValueError(f"{self.root}: both val/ and test/ found; keep only one test split")
        test_folder = present[0]
        by_split = {
            "train": ("train", self._group("train", train_entries)),
            "test": (test_folder, self._group(test_folder, found[test_folder] or [])),
        }
        class_names = list(by_split["train"][1])
        unknown = sorted(set(by_split["test"][1]) - set(class_names))
        if unknown:
            raise ValueError(
                f"{self._folder_uri(test_folder)} has classes that train/ lacks: "
                f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} ({len(unknown)})"
            )
        label_of = {name: index for index, name in enumerate(class_names)}
        records: dict[str, list[ImageRecord]] = {}
        sizes: list[tuple[str, int]] = []
        for split, (folder, classes) in by_split.items():
            records[split] = []
            seen: dict[str, str] = {}
            for class_name, files in classes.items():
                for relative, size, ref in files:
                    key = record_key(relative)
                    if key in seen:
                        raise ValueError(
                            f"{folder}/{seen[key]} and {folder}/{relative} both map to the key "
                            f"{key!r}; rename one of them"
                        )
                    seen[key] = relative
                    filename = relative.split("/")[1]
                    records[split].append(ImageRecord(key, label_of[class_name], filename, ref))
                    sizes.append((f"{folder}/{relative}", size))
            records[split].sort(key=lambda record: record.key)
        # JSON keeps the encoding unambiguous whatever characters the paths hold.
        digest = hashlib.sha256(json.dumps(sorted(sizes)).encode()).hexdigest()
        return _Listing(class_names, test_folder, records, digest)
