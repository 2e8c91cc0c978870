"""Which training images keep their labels: a fraction, a count per class or a file list."""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from simclrv2.datasets.image_source import ImageRecord
from simclrv2.datasets.label_subset import balanced_subset

_FIELDS = ("fraction", "per_class", "file_list", "seed")
_MAX_NAMES_SHOWN = 5


def _some(names: list[str]) -> str:
    """The first few names, and "..." if there are more."""
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    return shown + (" ..." if len(names) > _MAX_NAMES_SHOWN else "")


@dataclass(frozen=True)
class LabelSubsetSpec:
    """Exactly one of:

    - ``fraction``: a class-balanced share of the images, in (0, 1] (e.g. 0.01 for 1%);
    - ``per_class``: that many images of every class (>= 1);
    - ``file_list``: a text file in the format of the official ImageNet subsets
      (``1percent.txt``): one file name per line, e.g. ``n01440764_10026.JPEG``.

    ``seed`` picks the balanced subsets (the same records and seed give the same subset).
    """

    fraction: float | None = None
    per_class: int | None = None
    file_list: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        given = [name for name in _FIELDS[:3] if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of fraction (e.g. 0.01), per_class (e.g. 13) or file_list "
                f"(e.g. 1percent.txt); got {', '.join(given) or 'none'}"
            )
        if self.fraction is not None and (
            isinstance(self.fraction, bool) or not 0 < self.fraction <= 1
        ):
            raise ValueError(
                f"label fraction must be in (0, 1], e.g. 0.01 for 1 % of the labels; "
                f"got {self.fraction!r}"
            )
        if self.per_class is not None and (
            isinstance(self.per_class, bool)
            or not isinstance(self.per_class, int)
            or self.per_class < 1
        ):
            raise ValueError(f"per_class must be an integer >= 1, got {self.per_class!r}")
        if self.file_list == "":
            raise ValueError("file_list must be a path to a text file, got an empty string")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    def file_names(self) -> list[str]:
        """The names in ``file_list``, in file order, without blank lines or surrounding spaces."""
        if self.file_list is None:
            raise ValueError("this spec has no file_list")
        try:
            lines = Path(self.file_list).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise ValueError(
                f"label file {self.file_list} does not exist: pass a text file with one image "
                "file name per line (the 1percent.txt format)"
            ) from None
        except UnicodeDecodeError:
            raise ValueError(
                f"label file {self.file_list} is not UTF-8 text: it should hold one image file "
                "name per line (the 1percent.txt format)"
            ) from None
        return [line.strip() for line in lines if line.strip()]

    def to_dict(self) -> dict[str, Any]:
        """The fields, plus ``file_list_sha256`` (the list's content, None without a list) so
        that a changed list makes a different dict."""
        digest = None
        if self.file_list is not None:
            digest = hashlib.sha256(Path(self.file_list).read_bytes()).hexdigest()
        return {name: getattr(self, name) for name in _FIELDS} | {"file_list_sha256": digest}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LabelSubsetSpec":
        """The spec from ``to_dict`` output (``file_list_sha256`` is not checked: compare
        ``to_dict()`` results to see whether a list changed)."""
        unknown = sorted(set(data) - {*_FIELDS, "file_list_sha256"})
        if unknown:
            raise ValueError(f"unknown label subset fields: {', '.join(unknown)}")
        return cls(**{name: data[name] for name in _FIELDS if name in data})

    def select(self, records: list[ImageRecord]) -> list[int]:
        """Sorted indices into ``records`` of the labeled ones.

        ``fraction`` / ``per_class``: ``balanced_subset`` over the records' labels. ``file_list``:
        the records whose ``filename`` is listed; ``ValueError`` if a listed name matches no
        record (showing a few and the count) or several.
        """
        if self.file_list is None:
            labels = torch.tensor([record.label for record in records], dtype=torch.int64)
            subset = balanced_subset(labels, self.fraction, self.per_class, self.seed)
            return subset.tolist()
        names = set(self.file_names())
        if not names:
            raise ValueError(f"{self.file_list} lists no file names")
        matches: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            if record.filename in names:
                matches.setdefault(record.filename, []).append(index)
        missing = sorted(names - set(matches))
        if missing:
            raise ValueError(
                f"{len(missing)} of the {len(names)} names in {self.file_list} match no image: "
                + _some(missing)
                + " (names are file names of train/ images, e.g. n01440764_10026.JPEG): fix "
                "the list or add the images"
            )
        ambiguous = sorted(name for name, indices in matches.items() if len(indices) > 1)
        if ambiguous:
            raise ValueError(
                f"{len(ambiguous)} names in {self.file_list} match several images: "
                + _some(ambiguous)
            )
        return sorted(index for indices in matches.values() for index in indices)
