"""The interface between image datasets and the shard writer: records, encoded bytes, fingerprint.

A source lists each split as ``ImageRecord`` s (cheap, sorted by key), returns one
record's encoded image bytes at a time (never the whole dataset in memory, and never re-encoded
when the source already holds encoded files), and fingerprints its content so that a re-run on the
same inputs can be recognised. Sources never modify what they read.

Sources must be picklable (the shard step may fan out to processes): they hold no open files or
clients after construction and create them lazily instead.
"""

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split.

    ``key`` is unique within the split, stable across runs and safe as a WebDataset ``__key__``
    (no dots, no slashes; e.g. ``"n01440764_n01440764_10026"`` or ``"train_000123"``). ``label``
    is the class index into the source's ``class_names``. ``filename`` is the original file name
    (basename) or a generated one such as ``"train_000123.png"``; label-subset file lists are
    matched against it. ``ref`` is how the source finds the bytes (a path, URI or array index);
    it is opaque to callers.
    """

    key: str
    label: int
    filename: str
    ref: str | int


@runtime_checkable
class ImageSource(Protocol):
    """A read-only image dataset split into ``splits`` (``("train", "test")``).

    ``description`` says what and where, without secrets (e.g. ``"fashion-mnist:/usr/share/
    datasets/fashion-mnist"`` or ``"imagefolder:s3://bucket/prefix"``).
    """

    description: str
    class_names: list[str]
    splits: tuple[str, ...]

    def records(self, split: str) -> list[ImageRecord]:
        """The split's records, sorted by key (a deterministic order)."""
        ...

    def read(self, split: str, record: ImageRecord) -> tuple[bytes, str]:
        """One record's encoded image bytes and extension (``"jpg"``, ``"jpeg"`` or ``"png"``)."""
        ...

    def fingerprint(self) -> str:
        """A sha256 hex digest identifying the source's content (all splits)."""
        ...
