"""The shard step: an image source -> WebDataset shards + manifest (local folder or S3).

Three splits come out: `labeled` (the label subset of the training split), `unlabeled` (the
whole training split, labels withheld) and `test`. Everything is decided before the first
byte is written (source listing, label subset, seeded sample order), so bad input fails
early with nothing written. The work splits into `num_parts` independent ranges: each part
writes its shards and a small part file; publishing merges the part files into the manifest,
written last. A part whose part file already exists is not redone (resumable), publishing an
existing identical dataset is a no-op, and a different dataset is never written over.

With `versioned=True` the output is a base under which each distinct dataset gets its own
content-addressed folder, `<output>/v-<fingerprint[:16]>` (the fingerprint covers the source
listing, the label spec, the seed and the shard limits): new images make a new version beside
the old ones, unchanged inputs find their version already published and do no work. This is
how scheduled retraining shards a source that changes (the pipeline always versions).
"""

import hashlib
import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

from simclrv2.datasets.builtin_sources import BUILTIN_SOURCES, open_builtin_source
from simclrv2.datasets.image_check import BadImageError
from simclrv2.datasets.image_folder_source import ImageFolderSource
from simclrv2.datasets.image_source import ImageRecord, ImageSource
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.errors import UsageError
from simclrv2.shards.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    DatasetManifest,
    ShardInfo,
    SplitInfo,
)
from simclrv2.shards.shard_writer import RollingShardWriter
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import is_s3_uri, join_uri
from simclrv2.training.progress import Progress

log = logging.getLogger(__name__)

PARTS_FOLDER = "_parts"
VERSION_PREFIX = "v-"
VERSION_DIGITS = 16  # 64 bits of the sha256: collisions are not a practical concern


class DatasetExistsError(FileExistsError, UsageError):
    """A different dataset is already published at the output: choose another (exit 2)."""


@dataclass(frozen=True)
class ShardRequest:
    """Typed arguments of the shard step (the CLI and the KFP component map onto these)."""

    source: str  # a built-in name (fashion-mnist, mnist, cifar10, stl10) or an ImageFolder root
    output: str  # s3://bucket/prefix or a local folder
    label_subset: LabelSubsetSpec = field(default_factory=lambda: LabelSubsetSpec(fraction=0.01))
    seed: int = 0
    max_samples_per_shard: int = 10_000
    max_bytes_per_shard: int = 256 * 2**20
    source_root: str | None = None  # where a built-in dataset's files are (default: search)
    num_parts: int = 1
    sample_limit: int | None = None  # only the first N records of each source split (trials)
    versioned: bool = False  # publish under <output>/v-<fingerprint> (see the module docstring)

    def __post_init__(self):
        if self.max_samples_per_shard < 1:
            raise ValueError(
                f"max samples per shard must be >= 1, got {self.max_samples_per_shard}"
            )
        if self.max_bytes_per_shard < 1024:
            raise ValueError(f"max bytes per shard must be >= 1024, got {self.max_bytes_per_shard}")
        if self.num_parts < 1:
            raise ValueError(f"num_parts must be >= 1, got {self.num_parts}")
        if self.sample_limit is not None and self.sample_limit < 1:
            raise ValueError(f"sample_limit must be >= 1, got {self.sample_limit}")


@dataclass(frozen=True)
class ShardPlan:
    """Every decision of a shard run; parts only execute it."""

    request: ShardRequest
    source: ImageSource
    fingerprint: str
    # split -> ordered (source split, record) pairs
    samples: dict[str, list[tuple[str, ImageRecord]]]

    def part_range(self, split: str, part: int) -> list[tuple[str, ImageRecord]]:
        items = self.samples[split]
        n = self.request.num_parts
        return items[part * len(items) // n : (part + 1) * len(items) // n]


def open_source(source: str, source_root: str | None, store: ObjectStore) -> ImageSource:
    if source in BUILTIN_SOURCES:
        return open_builtin_source(source, source_root)
    if not is_s3_uri(source) and not os.path.isdir(source):
        raise ValueError(
            f"source {source!r} is neither a built-in dataset ({', '.join(BUILTIN_SOURCES)}) "
            "nor an existing ImageFolder directory (train/<class>/..., val/ or test/)"
        )
    return ImageFolderSource(source, store if is_s3_uri(source) else None)


def _shuffled(items: list, seed: int, split: str) -> list:
    rng = random.Random(f"{seed}:{split}")  # str seeds are stable across Python versions
    items = list(items)
    rng.shuffle(items)
    return items


def version_uri(base: str, fingerprint: str) -> str:
    """Where a versioned dataset with this fingerprint is published under `base`."""
    return join_uri(base, VERSION_PREFIX + fingerprint[:VERSION_DIGITS])


def make_plan(request: ShardRequest, store: ObjectStore) -> ShardPlan:
    """Every decision of the run. With `request.versioned`, the plan's request names the
    version folder as its output (so parts and publish all write there)."""
    source = open_source(request.source, request.source_root, store)
    train = source.records("train")[: request.sample_limit]
    test = source.records("test")[: request.sample_limit]
    if not train or not test:
        raise ValueError(f"source {source.description} has an empty train or test split")
    labeled = [train[i] for i in request.label_subset.select(train)]
    inputs = {
        "format_version": FORMAT_VERSION,
        "source_fingerprint": source.fingerprint(),
        "class_names": list(source.class_names),
        "label_subset": request.label_subset.to_dict(),
        "seed": request.seed,
        "shard_limits": _limits(request),
        "sample_limit": request.sample_limit,
    }
    fingerprint = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    if request.versioned:
        request = replace(request, output=version_uri(request.output, fingerprint), versioned=False)
    samples = {
        "labeled": _shuffled([("train", r) for r in labeled], request.seed, "labeled"),
        "unlabeled": _shuffled([("train", r) for r in train], request.seed, "unlabeled"),
        "test": _shuffled([("test", r) for r in test], request.seed, "test"),
    }
    return ShardPlan(request, source, fingerprint, samples)


def _limits(request: ShardRequest) -> dict:
    return {
        "max_samples_per_shard": request.max_samples_per_shard,
        "max_bytes_per_shard": request.max_bytes_per_shard,
    }


def _part_uri(request: ShardRequest, part: int) -> str:
    name = f"part-{part:03d}-of-{request.num_parts:03d}.json"
    return join_uri(request.output, PARTS_FOLDER, name)


def encode_sample(
    record: ImageRecord, data: bytes, extension: str, labeled: bool, class_names
) -> dict:
    """One WebDataset sample: the image bytes as they came, label and metadata."""
    metadata = {"filename": record.filename}
    sample = {"__key__": record.key, extension.lower(): data}
    if labeled:
        metadata |= {"label": record.label, "class_name": class_names[record.label]}
        sample["cls"] = str(record.label).encode()
    sample["json"] = json.dumps(metadata, sort_keys=True).encode()
    return sample


def read_published(output: str, store: ObjectStore) -> DatasetManifest | None:
    uri = join_uri(output, MANIFEST_NAME)
    if not store.exists(uri):
        return None
    return DatasetManifest.from_json(store.read_bytes(uri).decode(), origin=uri)


def _check_not_published_differently(plan: ShardPlan, store: ObjectStore):
    existing = read_published(plan.request.output, store)
    if existing is not None and existing.fingerprint != plan.fingerprint:
        raise DatasetExistsError(
            f"a different dataset is already published at {plan.request.output} (from "
            f"{existing.source}); published datasets are never overwritten: choose another "
            "--output, or delete that one"
        )
    return existing


def write_part(plan: ShardPlan, part: int, store: ObjectStore) -> dict[str, list[ShardInfo]]:
    """Write part `part` of every split; skipped when its part file already exists."""
    request = plan.request
    if not 0 <= part < request.num_parts:
        raise ValueError(
            f"part {part} is out of range for {request.num_parts} parts "
            f"(0 to {request.num_parts - 1})"
        )
    part_uri = _part_uri(request, part)
    if store.exists(part_uri):
        done = json.loads(store.read_bytes(part_uri))
        if done["fingerprint"] == plan.fingerprint:
            log.info("part %d/%d already written, skipping", part + 1, request.num_parts)
            return {s: [ShardInfo(**i) for i in infos] for s, infos in done["splits"].items()}
    total = sum(len(plan.part_range(split, part)) for split in plan.samples)
    progress = Progress(f"shard part {part + 1}/{request.num_parts}", total, every=1000)
    written, done_samples, bad = {}, 0, {}
    for split in plan.samples:
        labeled = split != "unlabeled"
        prefix = f"{split}-{part:03d}"
        writer = RollingShardWriter(
            store,
            request.output,
            prefix,
            request.max_samples_per_shard,
            request.max_bytes_per_shard,
        )
        with writer:
            for source_split, record in plan.part_range(split, part):
                try:
                    data, extension = plan.source.read(source_split, record)
                except BadImageError as error:  # go on: the user fixes every bad file at once
                    bad.setdefault(str(record.ref), str(error))
                    continue
                sample = encode_sample(record, data, extension, labeled, plan.source.class_names)
                writer.write(sample)
                done_samples += 1
                progress.update(done_samples, 1)
        written[split] = writer.shards
    if bad:
        _refuse_bad_images(bad, written, store)
    part_record = {
        "fingerprint": plan.fingerprint,
        "splits": {s: [asdict(i) for i in infos] for s, infos in written.items()},
    }
    store.write_bytes(part_uri, json.dumps(part_record, indent=1).encode())
    return written


def _refuse_bad_images(bad: dict[str, str], written: dict, store: ObjectStore) -> None:
    """Delete this part's shards (they would hold a dataset without those images) and say
    which files to fix."""
    for infos in written.values():
        for info in infos:
            store.delete(info.uri)
    if len(bad) == 1:
        raise BadImageError(next(iter(bad.values())))
    names = sorted(bad)
    shown = ", ".join(names[1:4]) + (" ..." if len(names) > 4 else "")
    raise BadImageError(
        f"{len(bad)} image files cannot be used: {bad[names[0]]}; the others: {shown}"
    )


def publish(plan: ShardPlan, store: ObjectStore) -> DatasetManifest:
    """Merge the part files into the manifest and write it (last)."""
    request = plan.request
    existing = _check_not_published_differently(plan, store)
    if existing is not None:
        return existing
    shards: dict[str, list[ShardInfo]] = {split: [] for split in plan.samples}
    for part in range(request.num_parts):
        uri = _part_uri(request, part)
        if not store.exists(uri):
            raise ValueError(
                f"part {part + 1} of {request.num_parts} has not been written ({uri} is "
                "missing): run every part before publishing"
            )
        done = json.loads(store.read_bytes(uri))
        if done["fingerprint"] != plan.fingerprint:
            raise ValueError(f"{uri} belongs to a run with different inputs: re-run that part")
        for split, infos in done["splits"].items():
            shards[split].extend(ShardInfo(**info) for info in infos)
    manifest = DatasetManifest(
        source=plan.source.description,
        source_fingerprint=plan.source.fingerprint(),
        fingerprint=plan.fingerprint,
        class_names=tuple(plan.source.class_names),
        seed=request.seed,
        label_subset=request.label_subset.to_dict(),
        shard_limits=_limits(request),
        splits={
            split: SplitInfo(shards=tuple(infos), labeled=split != "unlabeled")
            for split, infos in shards.items()
        },
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    store.write_bytes(join_uri(request.output, MANIFEST_NAME), manifest.to_json().encode())
    return manifest


def shard_dataset(request: ShardRequest, store: ObjectStore | None = None) -> DatasetManifest:
    """The whole step in one process: plan, write every part, publish."""
    return shard_dataset_at(request, store)[1]


def shard_dataset_at(
    request: ShardRequest, store: ObjectStore | None = None
) -> tuple[str, DatasetManifest]:
    """`shard_dataset`, also returning where the dataset is published (the version folder
    when the request is versioned, else its output)."""
    store = store or ObjectStore()
    store.check_bucket(request.output)
    plan = make_plan(request, store)
    output = plan.request.output
    existing = _check_not_published_differently(plan, store)
    if existing is not None:
        log.info("an identical dataset is already published at %s: nothing to do", output)
        return output, existing
    for part in range(request.num_parts):
        write_part(plan, part, store)
    return output, publish(plan, store)
