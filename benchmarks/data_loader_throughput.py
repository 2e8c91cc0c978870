"""Data-step throughput: writing WebDataset shards, and loading them vs a plain ImageFolder.

One run, all on this machine:

1. A real-image ImageFolder is made on local disk: Fashion-MNIST images resized to 64 x 64
   (bicubic), converted to RGB and saved as JPEG (quality 90) under train/<class>/ and
   val/<class>/, so every variant below decodes the same real JPEG files.
2. Shard writing: `shard_dataset` from that folder to (a) a local folder and (b) an S3 bucket
   on a SeaweedFS server started on loopback. Samples/s counts the samples of all three
   splits (labeled, unlabeled, test); MB/s the shard bytes in the manifest (MB = 10^6 bytes).
3. Loading the unlabeled split (the pretraining input), same images, batch size and workers:
   (a) `make_shard_loader` streaming from SeaweedFS, (b) the same from the local shard folder,
   (c) baseline: torchvision's ImageFolder over the JPEG tree in a plain shuffled DataLoader.
   Once with the two-view pretraining augmentation (`pretrain_transform` in `TwoViews`, blur
   on at 64 px) and once decode only (no augmentation: uint8 tensors), which separates the
   cost of reading and decoding from the cost of augmenting.
4. Per-image cost in this one process (1 thread, no workers) of JPEG decoding and of the
   two-view augmentation, to show where the loaders' time goes.

Every measurement builds a fresh DataLoader, takes untimed warm-up batches (one per worker:
worker start, shard open, shuffle-buffer fill), then times --images images (--decode-images
without augmentation); its workers are shut down before
the next one starts. Variants are interleaved: every round measures each once, the order
alternating between rounds (a b c, c b a, ...), and the median over rounds is reported, with
the ratio against the ImageFolder baseline of the same run. Shard writes alternate local / S3
the same way, each round to a new output.

Run from the repository root (about 2 minutes on a 2-core CPU):

    .venv/bin/python benchmarks/data_loader_throughput.py
    .venv/bin/python benchmarks/data_loader_throughput.py --num-workers 4 --rounds 5

Results also go to benchmarks/results/data_loader_throughput.json (git-ignored).
"""

import argparse
import contextlib
import gc
import io
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.v2.functional import pil_to_tensor

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a plain script without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.machine import cpu_model  # noqa: E402
from pipelines.local_seaweedfs import SeaweedFS, find_weed_binary, start_seaweedfs  # noqa: E402
from simclrv2.data.augmentations import TwoViews, pretrain_transform  # noqa: E402
from simclrv2.datasets.fashion_mnist import CLASSES, load_fashion_mnist  # noqa: E402
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec  # noqa: E402
from simclrv2.shards.loader import make_shard_loader  # noqa: E402
from simclrv2.shards.manifest import DatasetManifest  # noqa: E402
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset  # noqa: E402
from simclrv2.storage.object_store import ObjectStore  # noqa: E402
from simclrv2.storage.s3_client import S3Settings  # noqa: E402

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "data_loader_throughput.json"
BUCKET = "bench"
SPLIT = "unlabeled"  # what pretraining reads: the whole training split, labels withheld
LABEL_FRACTION = 0.01
MB = 1e6


@dataclass
class LoaderVariant:
    name: str
    group: str  # "two views" or "decode only"
    make_loader: Callable[[], DataLoader]
    baseline: bool = False
    round_images_per_s: list[float] = field(default_factory=list)
    round_warmup_s: list[float] = field(default_factory=list)
    round_images: list[int] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Measure the data step on this machine: writing WebDataset shards from a JPEG "
            "ImageFolder (Fashion-MNIST resized to 64 px) to a local folder and to S3 "
            "(a SeaweedFS server started on loopback), and loader throughput over the "
            "unlabeled split: make_shard_loader from S3 and from the local folder vs "
            "torchvision ImageFolder, with the two-view pretraining augmentation and decode "
            "only. Variants are interleaved over rounds; the median round is reported."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--train-images", type=int, default=6000, help="Fashion-MNIST training images used"
    )
    parser.add_argument(
        "--test-images", type=int, default=1000, help="Fashion-MNIST test images used (val/)"
    )
    parser.add_argument("--image-size", type=int, default=64, help="JPEG side in pixels")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality (1-95)")
    parser.add_argument(
        "--samples-per-shard",
        type=int,
        default=500,
        help="max samples per shard (the unlabeled split needs >= --num-workers shards)",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument(
        "--shuffle-buffer", type=int, default=1000, help="shard loader shuffle buffer (samples)"
    )
    parser.add_argument("--color-jitter", type=float, default=1.0, help="colour jitter strength s")
    parser.add_argument(
        "--images",
        type=int,
        default=2560,
        help="timed images per two-view variant in each round (after a warm-up batch per worker)",
    )
    parser.add_argument(
        "--decode-images",
        type=int,
        default=5120,
        help="timed images per decode-only variant in each round (decoding alone is fast)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per loader variant")
    parser.add_argument(
        "--write-rounds", type=int, default=3, help="shard writes per destination (median)"
    )
    parser.add_argument(
        "--profile-images",
        type=int,
        default=256,
        help="images for the one-process per-image cost of decoding and augmenting (0: skip)",
    )
    parser.add_argument("--seed", type=int, default=0, help="shard order, shuffle and labels")
    parser.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="where the temporary working folder goes (default: the system's temp folder); "
        "it is removed at the end",
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON results"
    )
    args = parser.parse_args(argv)
    for name in (
        "train_images",
        "test_images",
        "image_size",
        "samples_per_shard",
        "batch_size",
        "images",
        "decode_images",
        "rounds",
        "write_rounds",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.num_workers < 0 or args.profile_images < 0:
        parser.error("--num-workers and --profile-images must be >= 0")
    if not 1 <= args.jpeg_quality <= 95:
        parser.error("--jpeg-quality must be in 1-95")
    if args.train_images > 60_000 or args.test_images > 10_000:
        parser.error("Fashion-MNIST has 60,000 training and 10,000 test images")
    # Warm-up batches, the timed batches and a partial last batch per worker must fit in one
    # pass over the unlabeled split (the whole training split).
    workers = max(1, args.num_workers)
    for flag, wanted in (("--images", args.images), ("--decode-images", args.decode_images)):
        needed = (workers + math.ceil(wanted / args.batch_size) + workers) * args.batch_size
        if needed > args.train_images:
            parser.error(
                f"{flag} {wanted} with {workers} warm-up batches of {args.batch_size} needs "
                f"about {needed} training images; --train-images is {args.train_images}"
            )
    shards = math.ceil(args.train_images / args.samples_per_shard)
    if shards < max(1, args.num_workers):
        parser.error(
            f"{args.train_images} images at {args.samples_per_shard} per shard make {shards} "
            f"shards, fewer than the {args.num_workers} workers (a worker without a shard idles)"
        )
    return args


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def weed_version() -> str | None:
    weed = find_weed_binary()
    if weed is None:
        return None
    try:
        completed = subprocess.run(
            [weed, "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = completed.stdout.strip().splitlines()
    return first[0] if first else None


def class_folder(label: int) -> str:
    """A file-system-safe folder name that sorts in label order: 0 -> "0-t-shirt-top"."""
    slug = re.sub(r"[^a-z0-9]+", "-", CLASSES[label].lower()).strip("-")
    return f"{label}-{slug}"


def make_image_folder(root: Path, args: argparse.Namespace) -> dict:
    """Write Fashion-MNIST as RGB JPEGs in the ImageNet layout; return counts and timings."""
    start = time.perf_counter()
    written = {}
    for split, folder, limit in (
        ("train", "train", args.train_images),
        ("test", "val", args.test_images),
    ):
        images, labels = load_fashion_mnist(split, limit=limit)
        for label in range(len(CLASSES)):
            (root / folder / class_folder(label)).mkdir(parents=True, exist_ok=True)
        total_bytes = 0
        for index, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
            picture = Image.fromarray(image[0].numpy(), mode="L")
            picture = picture.resize((args.image_size, args.image_size), Image.Resampling.BICUBIC)
            path = root / folder / class_folder(label) / f"{index:05d}.jpg"
            picture.convert("RGB").save(path, format="JPEG", quality=args.jpeg_quality)
            total_bytes += path.stat().st_size
        written[folder] = {"images": len(images), "bytes": total_bytes}
    seconds = time.perf_counter() - start
    return {"splits": written, "seconds": seconds}


def time_shard_write(
    source: Path, output: str, store: ObjectStore, args: argparse.Namespace
) -> tuple[DatasetManifest, float]:
    request = ShardRequest(
        source=str(source),
        output=output,
        label_subset=LabelSubsetSpec(fraction=LABEL_FRACTION, seed=args.seed),
        seed=args.seed,
        max_samples_per_shard=args.samples_per_shard,
    )
    # shard_dataset prints a progress line every 1000 samples; keep the report readable.
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        manifest = shard_dataset(request, store)
    return manifest, time.perf_counter() - start


def manifest_totals(manifest: DatasetManifest) -> tuple[int, int, int]:
    """(samples, bytes, shards) over every split."""
    splits = manifest.splits.values()
    return (
        sum(split.samples for split in splits),
        sum(split.bytes for split in splits),
        sum(len(split.shards) for split in splits),
    )


def wait_for_workers(timeout_s: float = 60.0) -> None:
    """Let the last DataLoader's worker processes exit before the next measurement starts."""
    gc.collect()  # the DataLoader iterator shuts its workers down when it is collected
    deadline = time.monotonic() + timeout_s
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.02)


def measure(variant: LoaderVariant, images_wanted: int, warmup_batches: int):
    """One fresh loader: untimed warm-up batches, then time `images_wanted` images.

    Returns (images timed, seconds, seconds from creating the loader to its first batch).
    The warm-up is one batch per worker, so that every worker has started and the timed part
    is the steady state; it stops early if the pass ends first.
    """
    start = time.perf_counter()
    loader = variant.make_loader()
    batches = iter(loader)
    next(batches)  # workers start, shards open, the shuffle buffer fills: not timed
    first_batch_s = time.perf_counter() - start
    for _ in range(warmup_batches - 1):
        next(batches)
    count = 0
    start = time.perf_counter()
    while count < images_wanted:
        try:
            _, labels = next(batches)
        except StopIteration:
            break
        count += len(labels)
    seconds = time.perf_counter() - start
    del batches, loader
    wait_for_workers()
    return count, seconds, first_batch_s


def per_image_costs(image_folder: Path, transform: Callable, count: int, seed: int) -> dict:
    """Mean milliseconds per image in this process (1 thread) of decoding and augmenting."""
    paths = sorted((image_folder / "train").rglob("*.jpg"))[:count]
    encoded = [path.read_bytes() for path in paths]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    torch.manual_seed(seed)
    try:
        start = time.perf_counter()
        tensors = []
        for data in encoded:
            with Image.open(io.BytesIO(data)) as opened:
                opened.load()
                tensors.append(pil_to_tensor(opened.convert("RGB")))
        decode_s = time.perf_counter() - start
        start = time.perf_counter()
        for tensor in tensors:
            transform(tensor)
        augment_s = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return {
        "images": len(encoded),
        "mean_jpeg_bytes": sum(map(len, encoded)) / len(encoded),
        "decode_ms": 1000 * decode_s / len(encoded),
        "two_view_augment_ms": 1000 * augment_s / len(encoded),
    }


def build_variants(
    args: argparse.Namespace,
    image_folder: Path,
    manifests: dict[str, DatasetManifest],
    s3_settings: S3Settings,
) -> list[LoaderVariant]:
    two_views = TwoViews(pretrain_transform(args.image_size, args.color_jitter))

    def shard_loader(manifest: DatasetManifest, settings: S3Settings | None, transform):
        return lambda: make_shard_loader(
            manifest,
            SPLIT,
            transform,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            s3_settings=settings,
            shuffle_buffer=args.shuffle_buffer,
            seed=args.seed,
            image_mode="rgb",  # as ImageFolder's loader, which converts to RGB
        )

    def folder_loader(transform):
        # Listed once here, not in every round; the DataLoader (and its workers) is per round.
        dataset = torchvision.datasets.ImageFolder(str(image_folder / "train"), transform)
        return lambda: DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.num_workers,
            generator=torch.Generator().manual_seed(args.seed),
        )

    variants = []
    for group, shard_transform, folder_transform in (
        ("two views", two_views, two_views),
        # The shard loader gives uint8 tensors without a transform; ImageFolder gives PIL
        # images, so it gets the same pil_to_tensor the shard loader applies after decoding.
        ("decode only", None, pil_to_tensor),
    ):
        variants += [
            LoaderVariant(
                "shards, S3 (SeaweedFS)",
                group,
                shard_loader(manifests["s3"], s3_settings, shard_transform),
            ),
            LoaderVariant(
                "shards, local folder",
                group,
                shard_loader(manifests["local"], None, shard_transform),
            ),
            LoaderVariant(
                "ImageFolder (baseline)", group, folder_loader(folder_transform), baseline=True
            ),
        ]
    return variants


def run_writes(
    args: argparse.Namespace, image_folder: Path, work_dir: Path, server: SeaweedFS
) -> tuple[list[dict], dict[str, DatasetManifest]]:
    store = ObjectStore(server.settings)
    store.create_bucket(BUCKET)
    destinations = {
        "local": ("local folder", lambda r: str(work_dir / "shards" / f"round-{r}")),
        "s3": ("S3 (SeaweedFS)", lambda r: f"s3://{BUCKET}/fmnist-{args.image_size}px/round-{r}"),
    }
    seconds: dict[str, list[float]] = {key: [] for key in destinations}
    manifests: dict[str, DatasetManifest] = {}
    for round_index in range(args.write_rounds):
        order = list(destinations) if round_index % 2 == 0 else list(destinations)[::-1]
        for key in order:
            label, output_of = destinations[key]
            manifest, elapsed = time_shard_write(image_folder, output_of(round_index), store, args)
            manifests.setdefault(key, manifest)  # the loaders read the first round's shards
            seconds[key].append(elapsed)
            samples, total_bytes, _ = manifest_totals(manifest)
            print(
                f"write round {round_index + 1}/{args.write_rounds} {label:<16} "
                f"{elapsed:6.2f} s  {samples / elapsed:8.0f} samples/s  "
                f"{total_bytes / MB / elapsed:6.1f} MB/s",
                flush=True,
            )
    rows = []
    for key, (label, output_of) in destinations.items():
        samples, total_bytes, shards = manifest_totals(manifests[key])
        median_s = statistics.median(seconds[key])
        rows.append(
            {
                "destination": label,
                "output": output_of(0),
                "samples": samples,
                "split_samples": {n: s.samples for n, s in manifests[key].splits.items()},
                "shards": shards,
                "bytes": total_bytes,
                "median_s": median_s,
                "samples_per_s": samples / median_s,
                "mb_per_s": total_bytes / MB / median_s,
                "round_s": seconds[key],
            }
        )
    return rows, manifests


def run_loaders(args: argparse.Namespace, variants: list[LoaderVariant]) -> None:
    for round_index in range(args.rounds):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for variant in order:
            wanted = args.images if variant.group == "two views" else args.decode_images
            count, seconds, warmup_s = measure(variant, wanted, max(1, args.num_workers))
            variant.round_images_per_s.append(count / seconds)
            variant.round_warmup_s.append(warmup_s)
            variant.round_images.append(count)
            print(
                f"round {round_index + 1}/{args.rounds} {variant.group:<11} {variant.name:<22} "
                f"{count / seconds:7.0f} img/s  ({count} images in {seconds:5.2f} s, "
                f"first batch {warmup_s:4.2f} s)",
                flush=True,
            )


def loader_rows(variants: list[LoaderVariant]) -> list[dict]:
    baselines = {v.group: statistics.median(v.round_images_per_s) for v in variants if v.baseline}
    rows = []
    for variant in variants:
        rate = statistics.median(variant.round_images_per_s)
        rows.append(
            {
                "group": variant.group,
                "variant": variant.name,
                "median_images_per_s": rate,
                "vs_baseline": rate / baselines[variant.group],
                "median_first_batch_s": statistics.median(variant.round_warmup_s),
                "round_images_per_s": variant.round_images_per_s,
                "round_first_batch_s": variant.round_warmup_s,
                "round_images": variant.round_images,
            }
        )
    return rows


def print_tables(write_rows: list[dict], rows: list[dict], costs: dict | None) -> None:
    header = (
        f"{'shard write to':<16} {'samples':>7} {'shards':>6} {'MB':>6} {'median':>8} "
        f"{'samples/s':>9} {'MB/s':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    for row in write_rows:
        print(
            f"{row['destination']:<16} {row['samples']:>7} {row['shards']:>6} "
            f"{row['bytes'] / MB:>6.1f} {row['median_s']:>6.2f} s {row['samples_per_s']:>9.0f} "
            f"{row['mb_per_s']:>6.1f}"
        )
    for group in dict.fromkeys(row["group"] for row in rows):
        header = (
            f"{'loader (' + group + ')':<26} {'images/s':>9} {'vs baseline':>11} "
            f"{'first batch':>11}"
        )
        print()
        print(header)
        print("-" * len(header))
        for row in (r for r in rows if r["group"] == group):
            print(
                f"{row['variant']:<26} {row['median_images_per_s']:>9.0f} "
                f"{row['vs_baseline']:>10.2f}x {row['median_first_batch_s']:>9.2f} s"
            )
    if costs:
        print()
        print(
            f"one process, 1 thread, {costs['images']} images of {costs['mean_jpeg_bytes']:.0f} "
            f"bytes: JPEG decode {costs['decode_ms']:.3f} ms/image, two-view augmentation "
            f"{costs['two_view_augment_ms']:.2f} ms/image"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"data step: Fashion-MNIST {args.train_images} train + {args.test_images} test images "
        f"as {args.image_size}px RGB JPEG (quality {args.jpeg_quality}); batch {args.batch_size}, "
        f"{args.num_workers} workers, {args.samples_per_shard} samples/shard"
    )
    print(
        f"CPU {cpu_model()} ({os.cpu_count()} cores), torch {torch.__version__}, "
        f"{args.write_rounds} write rounds, {args.rounds} rounds x {args.images} images "
        "per loader variant",
        flush=True,
    )
    total_start = time.perf_counter()
    work_dir = Path(tempfile.mkdtemp(prefix="simclrv2-bench-data-", dir=args.tmp_dir))
    server: SeaweedFS | None = None
    try:
        image_folder = work_dir / "imagefolder"
        try:
            made = make_image_folder(image_folder, args)
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        train = made["splits"]["train"]
        print(
            f"wrote {train['images']} + {made['splits']['val']['images']} JPEGs "
            f"(mean {train['bytes'] / train['images']:.0f} bytes) in {made['seconds']:.1f} s",
            flush=True,
        )
        server = start_seaweedfs(work_dir / "seaweedfs")
        print(f"SeaweedFS at {server.endpoint_url}, ready in {server.started_in_s:.1f} s")

        write_rows, manifests = run_writes(args, image_folder, work_dir, server)
        unlabeled = manifests["local"].split(SPLIT)
        print(
            f"{SPLIT} split: {unlabeled.samples} samples in {len(unlabeled.shards)} shards",
            flush=True,
        )

        variants = build_variants(args, image_folder, manifests, server.settings)
        run_loaders(args, variants)
        rows = loader_rows(variants)
        server_rss = server.rss_bytes()

        costs = None
        if args.profile_images:
            two_views = TwoViews(pretrain_transform(args.image_size, args.color_jitter))
            costs = per_image_costs(image_folder, two_views, args.profile_images, args.seed)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    total_seconds = time.perf_counter() - total_start

    print_tables(write_rows, rows, costs)
    print(
        "images/s counts each image once (two views each in 'two views'); first batch = "
        "creating a fresh DataLoader to its first batch (untimed warm-up)."
    )
    print(f"total {total_seconds:.0f} s")

    results = {
        "benchmark": "data_loader_throughput",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "python_version": platform.python_version(),
        "package_versions": {
            name: package_version(name) for name in ("pillow", "webdataset", "boto3")
        },
        "seaweedfs_version": weed_version(),
        "seaweedfs_rss_bytes": server_rss,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "settings": {
            "train_images": args.train_images,
            "test_images": args.test_images,
            "image_size": args.image_size,
            "jpeg_quality": args.jpeg_quality,
            "label_fraction": LABEL_FRACTION,
            "samples_per_shard": args.samples_per_shard,
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "shuffle_buffer": args.shuffle_buffer,
            "color_jitter_strength": args.color_jitter,
            "loader_split": SPLIT,
            "timed_images_per_round": args.images,
            "timed_decode_only_images_per_round": args.decode_images,
            "warmup_batches": max(1, args.num_workers),
            "rounds": args.rounds,
            "write_rounds": args.write_rounds,
            "profile_images": args.profile_images,
            "seed": args.seed,
        },
        "image_folder": made,
        "method": (
            "fresh DataLoader per measurement, untimed warm-up batches (one per worker), then "
            "the timed images; variants interleaved per round (order alternating), median over "
            "rounds; "
            "shard writes alternate local / S3, median over write rounds; all data on the "
            "local disk (page cache) and SeaweedFS on loopback, sharing the CPU"
        ),
        "shard_write": write_rows,
        "loader": rows,
        "per_image_cost": costs,
        "total_seconds": total_seconds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
