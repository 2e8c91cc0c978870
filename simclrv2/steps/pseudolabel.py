"""Step 4 of the pipeline: the teacher pseudo-labels the unlabeled images, once.

Reads the dataset manifest (config.data.dataset) and a fine-tuned Classifier artifact (the
teacher), runs the teacher in eval mode on the eval-transformed unlabeled images and writes,
per image shard `i`, a sidecar shard `{output}/pseudo-{i:05d}.tar` holding, sample for sample
in the image shard's order, `{"__key__": key, "logits.npy": float32 logits}` (an image that
cannot be decoded gets `"skipped.txt"` instead, so the order still lines up). Images are not
copied: the distill step reads image shard i and sidecar shard i side by side
(`simclrv2.shards.paired_loader`) and never runs the teacher.

Raw logits are stored, not probabilities: the distillation temperature is a distill setting
(`teacher_probabilities(logits, tau)`), so one pseudo-labelling serves every tau.

The unit of work is one image shard. Shards are split over `num_parts` parts (separate jobs,
shard i goes to part i % num_parts) and, within a part, over the torchrun ranks. After each
sidecar, a small record `{output}/_done/pseudo-{i:05d}.json` (its size, sha256 and the run's
fingerprint) marks the shard done: a restarted job skips it. Once every shard is done, rank 0
of the call that finds them all (the last part; or the only call) writes
`{output}/manifest.json`, last: a DatasetManifest with one split, "unlabeled", whose shards
mirror the image shards (two parts that finish together may both write it: the same
content). Publishing an identical set again is a no-op; a different set is never written
over. Precision (bf16) is not part of the fingerprint: it changes the logits only by rounding.
"""

import dataclasses
import hashlib
import json
import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import webdataset as wds

from simclrv2.config.loading import dump_config
from simclrv2.config.run_config import DataSettings, RunConfig
from simclrv2.data.augmentations import eval_transform
from simclrv2.distributed.context import init_distributed
from simclrv2.models.simclr_model import Classifier
from simclrv2.performance import autocast, prepare_images, prepare_model
from simclrv2.shards.loader import READ_MODES, SampleDecoder, ShardStreams
from simclrv2.shards.manifest import MANIFEST_NAME, DatasetManifest, ShardInfo, SplitInfo
from simclrv2.shards.paired_loader import LOGITS, SKIPPED, SPLIT, encode_logits, tar_samples
from simclrv2.shards.shard_dataset import DatasetExistsError, read_published
from simclrv2.shards.verify import load_manifest
from simclrv2.steps.model_artifact import load_model
from simclrv2.steps.training_setup import bf16_enabled
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.s3_client import S3Settings
from simclrv2.storage.uri import basename, join_uri
from simclrv2.training.metrics import TrainingMetrics
from simclrv2.training.progress import Progress

FORMAT = 1  # of the sidecars; part of the fingerprint
DONE_FOLDER = "_done"


@dataclasses.dataclass(frozen=True)
class PseudolabelResult:
    manifest: DatasetManifest | None  # None while other parts have shards to do, or rank > 0
    manifest_uri: str
    shards_labeled: int  # by this call (this rank)
    shards_already_done: int  # by an earlier, interrupted attempt


def sidecar_uri(output: str, index: int) -> str:
    return join_uri(output, f"pseudo-{index:05d}.tar")


def _record_uri(output: str, index: int) -> str:
    return join_uri(output, DONE_FOLDER, f"pseudo-{index:05d}.json")


def images_manifest_uri(dataset: str) -> str:
    return dataset if dataset.endswith(".json") else join_uri(dataset, MANIFEST_NAME)


def assigned_shards(count: int, part: int | None, num_parts: int, rank: int, world: int):
    """The shard indices one rank of one part labels: part p has i % num_parts == p (every
    shard when part is None), dealt out round-robin over the ranks."""
    indices = range(count) if part is None else range(part, count, num_parts)
    return list(indices)[rank::world]


# The teacher -----------------------------------------------------------------------------


def load_teacher(store: ObjectStore, uri: str, images: DatasetManifest, data: DataSettings):
    """The teacher Classifier (CPU, eval mode), checked against the dataset."""
    model, _ = load_model(store, uri)
    if not isinstance(model, Classifier):
        raise ValueError(
            f"{uri} is a {type(model).__name__}, not a Classifier: pseudo-label with the "
            "fine-tuned model (the finetune step's model.pt)"
        )
    classes = len(images.class_names)
    if model.classifier.out_features != classes:
        raise ValueError(
            f"the teacher {uri} predicts {model.classifier.out_features} classes but the "
            f"dataset has {classes}: was it fine-tuned on this dataset?"
        )
    channels = model.encoder.config.in_channels
    if data.image_mode is not None and channels != data.channels:
        raise ValueError(
            f"the teacher {uri} takes {channels}-channel images but data.image_mode is "
            f"{data.image_mode!r} ({data.channels} channels)"
        )
    return model


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the architecture and every weight and buffer (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dataclasses.asdict(model.encoder.config), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


def pseudolabel_fingerprint(images: DatasetManifest, teacher: str, data: DataSettings) -> str:
    """Same images, same teacher weights, same preprocessing = same pseudo-labels."""
    inputs = {
        "format": FORMAT,
        "images": images.fingerprint,
        "teacher": teacher,
        "image_size": data.image_size,
        "image_mode": data.image_mode,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def teacher_logits(teacher, images: torch.Tensor, device, channels_last: bool, bf16: bool):
    """float32 numpy logits (N, num_classes) of a batch of eval-transformed images."""
    with torch.inference_mode(), autocast(device, bf16):
        logits = teacher(prepare_images(images, device, channels_last))
    return logits.float().cpu().numpy()


# Reading image shards in order -----------------------------------------------------------


def decode_in_order(samples: Iterator[dict], decoder: SampleDecoder) -> Iterator[tuple]:
    """(key, image) for every sample in stored order; image is None where `decoder` (a
    SampleDecoder with keys) skipped the sample as undecodable (it counts, logs and limits
    those). The keys handed to the decoder are remembered until it yields or skips them."""
    pending = deque()

    def remembered():
        for sample in samples:
            pending.append(sample["__key__"])
            yield sample

    for image, _, key in decoder(remembered()):
        while pending[0] != key:  # skipped by the decoder
            yield pending.popleft(), None
        pending.popleft()
        yield key, image
    while pending:
        yield pending.popleft(), None


class ShardChunk(NamedTuple):
    """Up to batch_size consecutive samples of one image shard."""

    shard: int  # index of the image shard
    keys: list[str]
    images: torch.Tensor | None  # the decodable ones, stacked; None if there are none
    decoded: list[bool]  # per key: whether its image is in `images`
    last: bool  # the shard's final chunk


class ShardImages(torch.utils.data.IterableDataset):
    """Chunks of whole image shards in stored order (no shuffle, no resampling). Each
    DataLoader worker takes whole shards, so every shard's chunks arrive in order."""

    def __init__(
        self,
        shards: list[tuple[int, ShardInfo]],
        transform: Callable,
        read_mode: str | None,
        max_corrupt_fraction: float,
        batch_size: int,
        s3_settings: S3Settings | None,
    ):
        self.shards = shards
        self.transform = transform
        self.read_mode = read_mode
        self.max_corrupt_fraction = max_corrupt_fraction
        self.batch_size = batch_size
        self.streams = ShardStreams(s3_settings)  # one store per process

    def __iter__(self) -> Iterator[ShardChunk]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        decoder = SampleDecoder(
            self.transform, False, self.read_mode, self.max_corrupt_fraction, with_keys=True
        )
        for index, shard in self.shards[worker::workers]:
            yield from self._chunks(index, shard, decoder)

    def _chunks(self, index: int, shard: ShardInfo, decoder) -> Iterator[ShardChunk]:
        stream = self.streams.store().open_read(shard.uri)
        try:
            keys, images, count = [], [], 0
            for key, image in decode_in_order(tar_samples(stream, shard.uri), decoder):
                if len(keys) == self.batch_size:  # full, and more follow: not the last
                    yield self._chunk(index, keys, images, last=False)
                    keys, images = [], []
                keys.append(key)
                images.append(image)
                count += 1
        finally:
            stream.close()
        if count != shard.samples:
            raise ValueError(
                f"image shard {shard.uri} holds {count} samples but the manifest says "
                f"{shard.samples}: the dataset was modified after publishing; re-shard it"
            )
        yield self._chunk(index, keys, images, last=True)

    @staticmethod
    def _chunk(index: int, keys: list, images: list, last: bool) -> ShardChunk:
        decodable = [image for image in images if image is not None]
        return ShardChunk(
            shard=index,
            keys=keys,
            images=torch.stack(decodable) if decodable else None,
            decoded=[image is not None for image in images],
            last=last,
        )


# Writing sidecars ------------------------------------------------------------------------


class SidecarWriter:
    """One sidecar shard, streamed to its URI and published only when closed (multipart
    upload on S3, temp file + rename locally); a fixed tar mtime makes the same logits give
    the same bytes."""

    def __init__(self, store: ObjectStore, uri: str):
        self.uri = uri
        self.samples = 0
        self._stream = store.open_write(uri)
        self._tar = wds.TarWriter(self._stream, encoder=False, mtime=0)

    def write(self, key: str, logits: np.ndarray | None) -> None:
        """logits: float32 (num_classes,), or None for an image that could not be decoded."""
        if logits is None:
            member = {SKIPPED: b"the image could not be decoded\n"}
        else:
            member = {LOGITS: encode_logits(logits)}
        self._tar.write({"__key__": key, **member})
        self.samples += 1

    def write_chunk(self, chunk: ShardChunk, logits: np.ndarray | None) -> None:
        """The chunk's samples in order; logits holds one row per decoded image."""
        rows = iter(() if logits is None else logits)
        for key, decoded in zip(chunk.keys, chunk.decoded, strict=True):
            self.write(key, next(rows) if decoded else None)

    def close(self) -> ShardInfo:
        self._tar.close()
        self._stream.close()
        return ShardInfo(
            self.uri, self.samples, self._stream.bytes_written, self._stream.sha256_hex()
        )

    def abort(self) -> None:
        """Drop the sidecar: it never appears."""
        self._stream.abort()


def _write_record(store: ObjectStore, output: str, index: int, info: ShardInfo, fingerprint):
    record = {"fingerprint": fingerprint, "sidecar": dataclasses.asdict(info)}
    store.write_bytes(_record_uri(output, index), json.dumps(record, indent=1).encode())


def _read_record(store: ObjectStore, output: str, index: int, fingerprint: str):
    """The ShardInfo of a sidecar done with these inputs, else None."""
    uri = _record_uri(output, index)
    if not store.exists(uri):
        return None
    record = json.loads(store.read_bytes(uri))
    return ShardInfo(**record["sidecar"]) if record["fingerprint"] == fingerprint else None


def _read_records(store: ObjectStore, output: str, indices: list[int], fingerprint: str):
    """_read_record for many shards, 16 lookups at a time."""
    if not indices:
        return []
    first = [_read_record(store, output, indices[0], fingerprint)]  # creates the S3 client
    with ThreadPoolExecutor(max_workers=16) as pool:
        rest = pool.map(lambda i: _read_record(store, output, i, fingerprint), indices[1:])
        return first + list(rest)


# The step --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Run:
    """What one call works with: inputs, the teacher on its device, and where output goes."""

    config: RunConfig
    store: ObjectStore
    output: str
    images: DatasetManifest
    teacher: torch.nn.Module
    fingerprint: str
    device: torch.device
    bf16: bool


def _label_shards(run: _Run, todo: list[int], batch_size: int, world_size: int, say, metrics):
    """Label the image shards `todo` and write their sidecars and records."""
    image_shards = run.images.split(SPLIT).shards
    data = run.config.data
    dataset = ShardImages(
        [(index, image_shards[index]) for index in todo],
        eval_transform(data.image_size),
        READ_MODES[data.image_mode],
        data.max_corrupt_fraction,
        batch_size,
        run.store.settings,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,  # chunks come batched
        num_workers=min(data.num_workers, len(todo)),
        pin_memory=run.device.type == "cuda",
    )
    total = sum(math.ceil(image_shards[index].samples / batch_size) for index in todo)
    progress = Progress("pseudolabel", total, run.config.runtime.log_every_steps, say)
    writers: dict[int, SidecarWriter] = {}
    try:
        for step, chunk in enumerate(loader, start=1):
            if chunk.shard not in writers:
                uri = sidecar_uri(run.output, chunk.shard)
                writers[chunk.shard] = SidecarWriter(run.store, uri)
            logits = None
            if chunk.images is not None:
                logits = teacher_logits(run.teacher, chunk.images, run.device,
                                        run.config.runtime.channels_last, run.bf16)  # fmt: skip
            writers[chunk.shard].write_chunk(chunk, logits)
            if chunk.last:
                info = writers.pop(chunk.shard).close()
                _write_record(run.store, run.output, chunk.shard, info, run.fingerprint)
            # Ranks label alike: this rank's images times the ranks estimates the whole job.
            images = len(chunk.keys) * world_size
            progress.update(step, images)
            metrics.update(step, 0, images=images, images_per_second=progress.images_per_second(),
                           eta_seconds=progress.eta_seconds(step), total_steps=total)  # fmt: skip
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise


def _publish(run: _Run, teacher_uri: str, teacher_fingerprint: str, say):
    """Write the manifest if every sidecar is done and intact; None while some are missing."""
    image_shards = run.images.split(SPLIT).shards
    infos = _read_records(run.store, run.output, list(range(len(image_shards))), run.fingerprint)
    missing = [index for index, info in enumerate(infos) if info is None]
    if missing:
        say(
            f"[pseudolabel] {len(missing)} of {len(image_shards)} sidecar shards are still to "
            "do (other parts): the call that finishes the last one publishes"
        )
        return None
    with ThreadPoolExecutor(max_workers=16) as pool:
        sizes = list(pool.map(lambda info: run.store.size(info.uri), infos))
    for image, info, size in zip(image_shards, infos, sizes, strict=True):
        if size != info.bytes or info.samples != image.samples:
            raise ValueError(
                f"sidecar shard {info.uri} ({size} bytes, {info.samples} samples) does not "
                f"match its record or image shard {image.uri}: delete it and its record "
                f"under {DONE_FOLDER}/ and re-run pseudolabel"
            )
    data = run.config.data
    manifest = DatasetManifest(
        source=f"pseudolabel:{teacher_uri}",
        source_fingerprint=run.images.fingerprint,
        fingerprint=run.fingerprint,
        class_names=run.images.class_names,
        seed=run.images.seed,  # the image dataset's: pseudo-labelling draws nothing at random
        label_subset={},
        shard_limits={},  # one sidecar per image shard
        splits={SPLIT: SplitInfo(shards=tuple(infos), labeled=False)},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        extra={
            "kind": "pseudolabels",
            "values": "logits",  # raw, float32; distill applies its temperature
            "images": images_manifest_uri(data.dataset),
            "images_fingerprint": run.images.fingerprint,
            "image_shards": [shard.uri for shard in image_shards],
            "teacher": teacher_uri,
            "teacher_fingerprint": teacher_fingerprint,
            "num_classes": len(run.images.class_names),
            "image_size": data.image_size,
            "image_mode": data.image_mode,
        },
    )
    run.store.write_bytes(join_uri(run.output, "config.yaml"), dump_config(run.config).encode())
    run.store.write_bytes(join_uri(run.output, MANIFEST_NAME), manifest.to_json().encode())
    say(f"[pseudolabel] published {join_uri(run.output, MANIFEST_NAME)}")
    return manifest


def pseudolabel(
    config: RunConfig,
    teacher_uri: str,
    output: str,
    store: ObjectStore | None = None,
    print_fn=print,
    part: int | None = None,
    num_parts: int = 1,
    batch_size: int = 256,
) -> PseudolabelResult:
    """Pseudo-label config.data.dataset's unlabeled split with the teacher at `teacher_uri`.

    part: label only the shards of part `part` of `num_parts` (one job each; the one that
    completes the set publishes); None labels every shard not yet done, then publishes.
    batch_size: images per teacher forward pass, per process. Under torchrun the ranks share
    the shards and rank 0 publishes; the other ranks return no manifest.
    """
    if num_parts < 1 or (part is not None and not 0 <= part < num_parts):
        raise ValueError(f"part {part} of {num_parts} parts: need 0 <= part < num_parts")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    context = init_distributed(config.runtime.device)
    store = store or ObjectStore()
    store.use_retry_budget(config.storage)  # the run config's outage budget
    say = print_fn if context.is_main else (lambda *_: None)
    store.check_bucket(output)
    images = load_manifest(config.data.dataset, store)
    teacher = load_teacher(store, teacher_uri, images, config.data)
    teacher_fingerprint = weights_fingerprint(teacher)
    fingerprint = pseudolabel_fingerprint(images, teacher_fingerprint, config.data)
    manifest_uri = join_uri(output, MANIFEST_NAME)
    existing = read_published(output, store)
    if existing is not None:
        if existing.fingerprint != fingerprint:
            raise DatasetExistsError(
                f"other pseudo-labels are already published at {output} ({existing.source}, "
                "or other images or preprocessing); published pseudo-labels are never "
                "overwritten: choose another output or delete it"
            )
        say(f"[pseudolabel] identical pseudo-labels already published at {output}: nothing to do")
        return PseudolabelResult(existing, manifest_uri, 0, 0)

    bf16 = bf16_enabled(config.runtime, context.device)
    teacher = prepare_model(teacher, context.device, config.runtime.channels_last).eval()
    run = _Run(config, store, output, images, teacher, fingerprint, context.device, bf16)
    shards = images.split(SPLIT).shards
    mine = assigned_shards(len(shards), part, num_parts, context.rank, context.world_size)
    done = _read_records(store, output, mine, fingerprint)
    todo = [index for index, info in zip(mine, done, strict=True) if info is None]
    say(
        f"[pseudolabel] teacher {teacher_uri}, {images.split(SPLIT).samples} images in "
        f"{len(shards)} shards; part {'all' if part is None else part + 1}/{num_parts}, "
        f"{context.world_size} process(es) on {context.device}: this one labels {len(todo)} "
        f"shard(s), {len(mine) - len(todo)} already done; batch {batch_size}, bf16 {bf16}, "
        f"channels_last {config.runtime.channels_last}"
    )
    metrics = TrainingMetrics(
        "pseudolabel",
        config.run_id or basename(output.rstrip("/")) or "pseudolabel",
        config.runtime.pushgateway_url,
        config.runtime.metrics_port,
        enabled=context.is_main,
    )
    with metrics:
        _label_shards(run, todo, batch_size, context.world_size, say, metrics)
    if context.distributed:
        dist.barrier()  # every rank's sidecars are written before rank 0 looks
    manifest = _publish(run, teacher_uri, teacher_fingerprint, say) if context.is_main else None
    return PseudolabelResult(manifest, manifest_uri, len(todo), len(mine) - len(todo))
