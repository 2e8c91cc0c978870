"""Images paired with the teacher's pseudo-labels: the loader of the distill step.

The pseudolabel step writes one sidecar shard per unlabeled image shard, sample for sample in
the same order: `{"__key__": key, "logits.npy": teacher logits}` (or, where the image could
not be decoded, `{"__key__": key, "skipped.txt": ...}` so the order still lines up). This
loader reads image shard i and sidecar shard i in lockstep and merges their samples; a key
that differs at any position fails loudly (the sidecars belong to other images).

The epoch semantics are those of `make_shard_loader` (same building blocks): shard pairs are
dealt out by the image shards' seeded order, so every sample comes exactly once per epoch
across ranks and workers, or, with `samples_per_epoch`, pairs are drawn with replacement and
every rank yields the same number of batches; all randomness derives from (seed, rank, epoch).
"""

import io
from collections.abc import Callable, Iterator
from itertools import zip_longest

import numpy as np
import torch
import webdataset as wds

from simclrv2.shards.loader import (
    READ_MODES,
    SampleDecoder,
    ShardStreams,
    _rank_and_world,
    build_loader,
    check_options,
    check_shards,
)
from simclrv2.shards.manifest import DatasetManifest
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.s3_client import S3Settings

SPLIT = "unlabeled"  # the split that is pseudo-labelled, in both manifests
LOGITS = "logits.npy"  # sidecar member: the teacher's raw logits, float32 (num_classes,)
SKIPPED = "skipped.txt"  # sidecar member instead of LOGITS where the image was undecodable


def encode_logits(logits: np.ndarray) -> bytes:
    """One sample's logits as .npy bytes (float32, 1-D)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(logits, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def decode_logits(data: bytes) -> torch.Tensor:
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.dtype != np.float32 or array.ndim != 1:
        raise ValueError(f"logits must be 1-D float32, got {array.dtype} {array.shape}")
    return torch.from_numpy(array)


def tar_samples(stream, url: str) -> Iterator[dict]:
    """The samples of one tar stream, in stored order (WebDataset grouping by key)."""
    files = wds.tariterators.tar_file_expander([{"url": url, "stream": stream}])
    return wds.tariterators.group_by_keys(files)


def check_pairing(images: DatasetManifest, pseudo: DatasetManifest) -> dict[str, str]:
    """image shard URI -> its sidecar URI, after checking that `pseudo` labels `images`."""
    image_shards = images.split(SPLIT).shards
    sidecars = pseudo.split(SPLIT).shards
    # Same fingerprint = same dataset, shard for shard, even when published elsewhere.
    made_for = pseudo.extra.get("images_fingerprint")
    if made_for != images.fingerprint or len(sidecars) != len(image_shards):
        raise ValueError(
            f"the pseudo-labels ({pseudo.source}) were made for another dataset than "
            f"{images.source} (fingerprint {images.fingerprint[:12]}): re-run pseudolabel"
        )
    for image, sidecar in zip(image_shards, sidecars, strict=True):
        if image.samples != sidecar.samples:
            raise ValueError(
                f"sidecar shard {sidecar.uri} has {sidecar.samples} samples but image shard "
                f"{image.uri} has {image.samples}: re-run pseudolabel"
            )
    return {image.uri: sidecar.uri for image, sidecar in zip(image_shards, sidecars, strict=True)}


class PairedSamples(ShardStreams):
    """{"url": image shard} -> the merged samples of that image shard and its sidecar."""

    def __init__(self, settings: S3Settings | None, sidecars: dict[str, str]):
        super().__init__(settings)
        self.sidecars = sidecars

    def __call__(self, shards: Iterator[dict]) -> Iterator[dict]:
        for shard in shards:
            image_uri = shard["url"]
            sidecar_uri = self.sidecars[image_uri]
            image_stream = self.store().open_read(image_uri)
            try:
                sidecar_stream = self.store().open_read(sidecar_uri)
                try:
                    yield from self._merge(
                        tar_samples(image_stream, image_uri),
                        tar_samples(sidecar_stream, sidecar_uri),
                        image_uri,
                        sidecar_uri,
                    )
                finally:
                    sidecar_stream.close()
            finally:
                image_stream.close()

    @staticmethod
    def _merge(images, sidecars, image_uri: str, sidecar_uri: str) -> Iterator[dict]:
        for image, sidecar in zip_longest(images, sidecars):
            if image is None or sidecar is None:
                raise ValueError(
                    f"sidecar shard {sidecar_uri} and image shard {image_uri} hold different "
                    "numbers of samples: re-run pseudolabel"
                )
            if image["__key__"] != sidecar["__key__"]:
                raise ValueError(
                    f"sidecar shard {sidecar_uri} does not match image shard {image_uri} at key "
                    f"{image['__key__']} (the sidecar has {sidecar['__key__']}): re-run pseudolabel"
                )
            merged = dict(image)
            if LOGITS in sidecar:
                merged[LOGITS] = sidecar[LOGITS]
            yield merged


class PairedSampleDecoder(SampleDecoder):
    """Merged sample -> (image after `transform`, teacher logits[, key]); undecodable images
    and samples the teacher had no logits for are skipped and counted as SampleDecoder does."""

    def __init__(self, transform, read_mode, max_corrupt_fraction, with_keys: bool = False):
        super().__init__(transform, False, read_mode, max_corrupt_fraction, with_keys=True)
        self.return_keys = with_keys

    def _decode(self, sample: dict):
        image, _, key = super()._decode(sample)
        if LOGITS not in sample:
            raise ValueError("the teacher has no logits for it (undecodable when pseudo-labelled)")
        logits = decode_logits(sample[LOGITS])
        return (image, logits, key) if self.return_keys else (image, logits)


def make_distill_loader(
    image_manifest: DatasetManifest,
    pseudo_manifest: DatasetManifest,
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
    epoch: int = 0,
    persistent_workers: bool = False,
    drop_last: bool = False,
    with_keys: bool = False,
    check: bool = True,
    collate_fn: Callable | None = None,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader of (images, teacher_logits) batches over the unlabeled split.

    teacher_logits: float32 (N, num_classes), the raw logits the teacher produced (apply the
    distillation temperature with `teacher_probabilities`). with_keys: batches are (images,
    teacher_logits, keys). Every other argument means what it means in `make_shard_loader`.
    Fails at once when `pseudo_manifest` was made for other images.
    """
    sidecars = check_pairing(image_manifest, pseudo_manifest)
    check_options(image_mode, max_corrupt_fraction)
    rank, world_size = _rank_and_world(rank, world_size)
    if check:
        store = ObjectStore(s3_settings)
        check_shards(image_manifest, SPLIT, store)
        check_shards(pseudo_manifest, SPLIT, store)
    decoder = PairedSampleDecoder(
        transform, READ_MODES[image_mode], max_corrupt_fraction, with_keys
    )
    return build_loader(
        image_manifest.split(SPLIT).uris, [PairedSamples(s3_settings, sidecars)], decoder,
        batch_size=batch_size, num_workers=num_workers, shuffle_buffer=shuffle_buffer,
        seed=seed, samples_per_epoch=samples_per_epoch, rank=rank, world_size=world_size,
        epoch=epoch, drop_last=drop_last, persistent_workers=persistent_workers,
        collate_fn=collate_fn, pin_memory=pin_memory,
    )  # fmt: skip
