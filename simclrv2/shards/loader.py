"""Streaming loader over a sharded dataset: manifest -> WebDataset pipeline -> batches.

shards (S3 through boto3, or local files) -> this rank's and this worker's shards -> tar
samples -> shuffle buffer -> decode + transform -> batches. Two epoch modes:
- exact (default): every sample exactly once per epoch across all ranks and workers (shards
  are dealt out in a seeded order that changes each epoch); ranks may get different counts.
- resampled (`samples_per_epoch` set): every rank and worker draws shards with replacement
  and each rank yields exactly samples_per_epoch / world_size samples, so data-parallel
  ranks always run the same number of steps.
Undecodable samples are skipped, counted and logged; the iteration fails once they exceed
`max_corrupt_fraction` of what a worker has seen.
"""

import io
import logging
import os
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.distributed as dist
import webdataset as wds
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from simclrv2.errors import UsageError
from simclrv2.shards.image_modes import to_training_mode
from simclrv2.shards.manifest import DatasetManifest
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.s3_client import S3Settings

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")
# image_mode -> PIL mode (None keeps what is stored)
READ_MODES = {"rgb": "RGB", "gray": "L", None: None}


class CorruptDataError(UsageError):
    """Too many samples could not be decoded: the data must be fixed (exit status 2)."""


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


def _seed_this_pass(seed: int, rank: int, epoch: int) -> None:
    """In a DataLoader worker, seed torch (hence the augmentations) from (seed, rank, worker,
    epoch) at the start of every pass: a persistent worker's pass k and a fresh worker's
    first pass at that epoch then draw the same views, so a resumed run can rebuild the loader
    at its epoch. In the main process (no workers) the training loop seeds each epoch."""
    info = torch.utils.data.get_worker_info()
    if info is not None:
        torch.manual_seed(hash((seed, rank, info.id, epoch)) % 2**62)


class ShardAssignment(torch.utils.data.IterableDataset):
    """Yields {"url": ...} for the shards this rank and DataLoader worker read this epoch.

    Each pass is one epoch: the shard order is reshuffled with (seed, epoch), the same on
    every rank and worker, then dealt out round-robin, so every shard is read exactly once.
    """

    def __init__(self, urls: list[str], rank: int, world_size: int, seed: int, epoch: int = 0):
        self.urls, self.rank, self.world_size, self.seed = list(urls), rank, world_size, seed
        self.epoch = epoch - 1  # the first pass is `epoch`

    def __iter__(self) -> Iterator[dict]:
        self.epoch += 1
        order = list(self.urls)
        random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        _seed_this_pass(self.seed, self.rank, self.epoch)
        worker, workers = _worker()
        for url in order[self.rank :: self.world_size][worker::workers]:
            yield {"url": url}


class ResampledShardAssignment(torch.utils.data.IterableDataset):
    """Yields shards drawn with replacement, seeded per (seed, rank, worker, epoch)."""

    def __init__(self, urls: list[str], rank: int, seed: int, epoch: int = 0):
        self.urls, self.rank, self.seed = list(urls), rank, seed
        self.epoch = epoch - 1  # the first pass is `epoch`

    def __iter__(self) -> Iterator[dict]:
        self.epoch += 1
        _seed_this_pass(self.seed, self.rank, self.epoch)
        worker, _ = _worker()
        rng = random.Random(f"{self.seed}:{self.rank}:{worker}:{self.epoch}")
        while True:
            yield {"url": rng.choice(self.urls)}


class ShardStreams:
    """Opens each shard as a stream; one ObjectStore (and boto3 client) per process, since
    clients must not cross a fork into DataLoader workers."""

    def __init__(self, settings: S3Settings | None):
        self.settings = settings
        self._store: tuple[int, ObjectStore] | None = None

    def store(self) -> ObjectStore:
        if self._store is None or self._store[0] != os.getpid():
            self._store = (os.getpid(), ObjectStore(self.settings))
        return self._store[1]

    def __call__(self, shards: Iterator[dict]) -> Iterator[dict]:
        for shard in shards:
            stream = self.store().open_read(shard["url"])
            try:
                yield {"url": shard["url"], "stream": stream}
            finally:
                stream.close()


@dataclass
class SampleDecoder:
    """Raw tar sample -> (uint8 image tensor after `transform`, label[, key]); skips and
    counts what cannot be decoded."""

    transform: Callable | None
    with_labels: bool
    read_mode: str | None
    max_corrupt_fraction: float
    with_keys: bool = False
    min_samples_before_failing: int = 50

    def __post_init__(self):
        self.seen = 0
        self.corrupt = 0

    def _decode(self, sample: dict):
        extension = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        if extension is None:
            raise ValueError(f"no image ({'/'.join(IMAGE_EXTENSIONS)}) in the sample")
        with Image.open(io.BytesIO(sample[extension])) as opened:
            opened.load()  # decode now: truncated or corrupt data raises here
            image = to_training_mode(opened, self.read_mode)
        image = pil_to_tensor(image)  # uint8 (C, H, W)
        if self.transform is not None:
            image = self.transform(image)
        label = int(sample["cls"]) if self.with_labels else -1
        return (image, label, sample["__key__"]) if self.with_keys else (image, label)

    def __call__(self, samples: Iterator[dict]) -> Iterator[tuple]:
        for sample in samples:
            self.seen += 1
            try:
                yield self._decode(sample)
            except Exception as error:
                self.corrupt += 1
                log.warning(
                    "skipping undecodable sample %s in %s: %s (%d of %d so far)",
                    sample.get("__key__"),
                    sample.get("__url__"),
                    error,
                    self.corrupt,
                    self.seen,
                )
                self._check()
        self._check(final=True)

    def _check(self, final: bool = False) -> None:
        if not final and self.seen < self.min_samples_before_failing:
            return
        if self.corrupt > self.max_corrupt_fraction * self.seen:
            raise CorruptDataError(
                f"{self.corrupt} of {self.seen} samples could not be decoded, more than the "
                f"allowed fraction {self.max_corrupt_fraction}: check the shards (simclrv2 "
                "verify), re-shard the source, or raise data.max_corrupt_fraction "
                "(--set data.max_corrupt_fraction=0.05)"
            )


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_shards(manifest: DatasetManifest, split: str, store: ObjectStore) -> None:
    """Fail at start, clearly, when a shard is missing or unreadable (bucket, credentials).

    One size lookup per shard, 16 at a time: thousands of shards take seconds, not minutes.
    """
    shards = manifest.split(split).shards
    # The first lookup creates the (lazily made) client before threads share it.
    sizes = [store.size(shards[0].uri)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        sizes += pool.map(lambda shard: store.size(shard.uri), shards[1:])
    for shard, size in zip(shards, sizes, strict=True):
        if size != shard.bytes:
            raise ValueError(
                f"shard {shard.uri} has {size} bytes but the manifest says {shard.bytes}: "
                "the dataset was modified after publishing; re-shard it"
            )


class ShuffleBuffer:
    """Shuffle buffer seeded by (seed, rank, worker, epoch): reproducible, yet different for
    every reader and every epoch."""

    def __init__(self, size: int, seed: int, rank: int, epoch: int = 0):
        self.size, self.seed, self.rank = size, seed, rank
        self.epoch = epoch - 1  # the first pass is `epoch`

    def __call__(self, samples: Iterator) -> Iterator:
        self.epoch += 1
        worker, _ = _worker()
        rng = random.Random(f"{self.seed}:{self.rank}:{worker}:{self.epoch}")
        buffer = []
        for sample in samples:
            if len(buffer) < self.size:
                buffer.append(sample)
                continue
            index = rng.randrange(len(buffer))
            buffer[index], sample = sample, buffer[index]
            yield sample
        rng.shuffle(buffer)
        yield from buffer


class EpochLength:
    """Ends each pass after this worker's share of `batches` whole batches, so that a rank
    yields exactly `batches` batches per epoch whatever the number of workers."""

    def __init__(self, batches: int, batch_size: int):
        self.batches, self.batch_size = batches, batch_size

    def __call__(self, samples: Iterator) -> Iterator:
        worker, workers = _worker()
        share = self.batches // workers + (1 if worker < self.batches % workers else 0)
        for count, sample in enumerate(samples):
            if count >= share * self.batch_size:
                return
            yield sample


def make_shard_loader(
    manifest: DatasetManifest,
    split: str,
    transform: Callable | None = None,
    *,
    batch_size: int,
    num_workers: int = 2,
    s3_settings: S3Settings | None = None,
    shuffle_buffer: int = 1000,
    seed: int = 0,
    samples_per_epoch: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    image_mode: str | None = None,
    max_corrupt_fraction: float = 0.01,
    drop_last: bool = False,
    with_keys: bool = False,
    check: bool = True,
    epoch: int = 0,
    persistent_workers: bool = True,
    collate_fn: Callable | None = None,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader of (images, labels) batches over one split of a sharded dataset.

    image_mode: "rgb", "gray" or None (as stored). Labels are -1 in the unlabeled split.
    with_keys: batches are (images, labels, keys), keys being the samples' __key__.
    rank/world_size default to torch.distributed's. With `samples_per_epoch`, each rank
    yields samples_per_epoch // world_size // batch_size whole batches per pass.
    check: look up every shard first, to fail at start on a missing shard, an unknown
    bucket or wrong credentials.
    epoch: the first pass's epoch (each later pass is the next). Everything random (shard
    order, shuffle buffer, the workers' torch seeds, hence augmentations) derives from (seed,
    rank, worker, epoch) and is reseeded at every pass: iterating one loader (persistent
    workers) over epochs e, e+1, ... gives the batches that fresh loaders built at each of
    those epochs give, so a resumed run rebuilds the loader at its epoch and replays them.
    collate_fn: how samples become a batch (default: torch's default_collate).
    pin_memory: page-locked batches, for asynchronous copies to a GPU.
    """
    info = manifest.split(split)
    check_options(image_mode, max_corrupt_fraction)
    rank, world_size = _rank_and_world(rank, world_size)
    if check:
        check_shards(manifest, split, ObjectStore(s3_settings))
    samples = [
        ShardStreams(s3_settings),
        wds.filters.pipelinefilter(wds.tariterators.tar_file_expander)(),
        wds.filters.pipelinefilter(wds.tariterators.group_by_keys)(),
    ]
    decoder = SampleDecoder(
        transform, info.labeled, READ_MODES[image_mode], max_corrupt_fraction, with_keys
    )
    return build_loader(
        info.uris, samples, decoder, batch_size=batch_size, num_workers=num_workers,
        shuffle_buffer=shuffle_buffer, seed=seed, samples_per_epoch=samples_per_epoch,
        rank=rank, world_size=world_size, epoch=epoch, drop_last=drop_last,
        persistent_workers=persistent_workers, collate_fn=collate_fn, pin_memory=pin_memory,
    )  # fmt: skip


def check_options(image_mode: str | None, max_corrupt_fraction: float) -> None:
    if image_mode not in READ_MODES:
        raise ValueError(f"image_mode must be one of {list(READ_MODES)}, got {image_mode!r}")
    if not 0 <= max_corrupt_fraction <= 1:
        raise ValueError(f"max_corrupt_fraction must be in [0, 1], got {max_corrupt_fraction}")


def build_loader(
    shard_uris: list[str],
    sample_stages: list,
    decoder: Callable,
    *,
    batch_size: int,
    num_workers: int,
    shuffle_buffer: int,
    seed: int,
    samples_per_epoch: int | None,
    rank: int,
    world_size: int,
    epoch: int,
    drop_last: bool,
    persistent_workers: bool,
    collate_fn: Callable | None = None,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """The frame every shard loader shares: this reader's shards -> `sample_stages` (shard
    dicts to sample dicts) -> shuffle buffer -> `decoder` -> fixed epoch length -> batches."""
    if samples_per_epoch is None:
        shards = ShardAssignment(shard_uris, rank, world_size, seed, epoch)
    else:
        shards = ResampledShardAssignment(shard_uris, rank, seed, epoch)
    stages = [shards, *sample_stages]
    if shuffle_buffer > 1:
        stages.append(ShuffleBuffer(shuffle_buffer, seed, rank, epoch))
    stages.append(decoder)
    if samples_per_epoch is not None:
        batches = samples_per_epoch // world_size // batch_size
        if batches < 1:
            raise ValueError(
                f"samples_per_epoch {samples_per_epoch} gives no whole batch of {batch_size} "
                f"per rank over {world_size} rank(s)"
            )
        # A small split (200 labels in 3 batches) under a profile's 8 workers: a worker with
        # no batch to make is only start-up cost, so no more workers than batches.
        num_workers = min(num_workers, batches)
        stages.append(EpochLength(batches, batch_size))
    return torch.utils.data.DataLoader(
        wds.DataPipeline(*stages),
        batch_size=batch_size,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=persistent_workers and num_workers > 0,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        # Workers' base seeds; augmentations are reseeded at every pass (_seed_this_pass).
        generator=torch.Generator().manual_seed(hash((seed, rank, epoch)) % 2**62),
    )
