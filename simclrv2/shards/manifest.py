"""The dataset manifest: a small typed JSON file that makes a sharded dataset exist.

Shards are written first and the manifest last, so a dataset without its manifest does not
exist (an interrupted run is invisible). Steps pass the manifest between them, never the
shards: the shards stay on S3 and the manifest points at them.
"""

import json
from dataclasses import asdict, dataclass, field

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("labeled", "unlabeled", "test")


@dataclass(frozen=True)
class ShardInfo:
    uri: str
    samples: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SplitInfo:
    shards: tuple[ShardInfo, ...]
    labeled: bool  # False for the unlabeled split: its samples carry no class

    @property
    def samples(self) -> int:
        return sum(shard.samples for shard in self.shards)

    @property
    def bytes(self) -> int:
        return sum(shard.bytes for shard in self.shards)

    @property
    def uris(self) -> list[str]:
        return [shard.uri for shard in self.shards]


@dataclass(frozen=True)
class DatasetManifest:
    source: str
    source_fingerprint: str
    fingerprint: str  # of every input: same fingerprint = same dataset
    class_names: tuple[str, ...]
    seed: int
    label_subset: dict
    shard_limits: dict
    splits: dict[str, SplitInfo]
    created_at: str
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise ValueError(f"the dataset has no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]

    def to_json(self) -> str:
        data = asdict(self)
        for name, split in self.splits.items():
            data["splits"][name]["samples"] = split.samples
            data["splits"][name]["bytes"] = split.bytes
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str = "manifest") -> "DatasetManifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{origin} is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise ValueError(f"{origin} is not a dataset manifest: it holds no JSON object")
        version = data.get("format_version")
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise ValueError(
                f"{origin} was written by a newer simclrv2 (format_version {version}; this one "
                f"reads {FORMAT_VERSION}): upgrade simclrv2, or shard the source again with it"
            )
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{origin} has format_version {version!r}; this version of simclrv2 reads "
                f"{FORMAT_VERSION}: re-shard the data or use a matching simclrv2 release"
            )
        try:
            splits = {
                name: SplitInfo(
                    shards=tuple(ShardInfo(**shard) for shard in split["shards"]),
                    labeled=split["labeled"],
                )
                for name, split in data.pop("splits").items()
            }
            data["class_names"] = tuple(data["class_names"])
            return cls(splits=splits, **data)
        except (KeyError, TypeError) as error:
            raise ValueError(f"{origin} is not a dataset manifest: {error}") from error
