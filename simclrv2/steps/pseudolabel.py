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

The parts live in simclrv2/pseudolabels/ (teacher, shard_images, sidecar_writer,
done_records, fingerprint); this module decides which shards a call labels, labels them with
progress, and publishes.
"""

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import torch
import torch.distributed as dist

from simclrv2.config.loading import dump_config
from simclrv2.config.run_config import RunConfig
from simclrv2.data.augmentations import eval_transform
from simclrv2.distributed.context import init_distributed
from simclrv2.performance import prepare_model
from simclrv2.pseudolabels.done_records import DONE_FOLDER, read_records, write_record
from simclrv2.pseudolabels.fingerprint import pseudolabel_fingerprint
from simclrv2.pseudolabels.shard_images import ShardImages
from simclrv2.pseudolabels.sidecar_writer import SidecarWriter, sidecar_uri
from simclrv2.pseudolabels.teacher import load_teacher, teacher_logits, weights_fingerprint
from simclrv2.shards.loader import READ_MODES
from simclrv2.shards.manifest import MANIFEST_NAME, DatasetManifest, SplitInfo
from simclrv2.shards.paired_loader import SPLIT
from simclrv2.shards.shard_dataset import DatasetExistsError, read_published
from simclrv2.shards.verify import load_manifest
from simclrv2.steps.training_setup import bf16_enabled
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import basename, join_uri
from simclrv2.training.metrics import TrainingMetrics
from simclrv2.training.progress import Progress


@dataclasses.dataclass(frozen=True)
class PseudolabelResult:
    manifest: DatasetManifest | None  # None while other parts have shards to do, or rank > 0
    manifest_uri: str
    shards_labeled: int  # by this call (this rank)
    shards_already_done: int  # by an earlier, interrupted attempt


def images_manifest_uri(dataset: str) -> str:
    return dataset if dataset.endswith(".json") else join_uri(dataset, MANIFEST_NAME)


def assigned_shards(count: int, part: int | None, num_parts: int, rank: int, world: int):
    """The shard indices one rank of one part labels: part p has i % num_parts == p (every
    shard when part is None), dealt out round-robin over the ranks."""
    indices = range(count) if part is None else range(part, count, num_parts)
    return list(indices)[rank::world]


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
                write_record(run.store, run.output, chunk.shard, info, run.fingerprint)
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
    infos = read_records(run.store, run.output, list(range(len(image_shards))), run.fingerprint)
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
    done = read_records(store, output, mine, fingerprint)
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
