"""Is the GPU fed? SimCLRv2 pretraining throughput, piece by piece, in one run.

Side by side, on the same device and in the same process:

1. data pipeline alone, from local WebDataset shards of JPEGs: views/s of
   (a) cpu: DataLoader workers decode and augment each image (PIL + torchvision), and
   (b) gpu: workers decode only, the batch is augmented on the device (data.pipeline: gpu);
2. the SimCLR train step alone on a fixed batch (encoder + projection head on 2N views,
   NT-Xent, backward, LARS), bf16 autocast + channels_last, eager and torch.compile'd (the
   compile time is reported);
3. the two together, end to end: shards -> decode -> device augmentation -> train step;
4. the anchor: a plain supervised torchvision ResNet-50 step (cross-entropy, SGD) at the same
   precision and memory format, on as many images per step as the SimCLR step has views.

Each line has throughput and peak device memory. The goal (issue 13): end-to-end views/s at
least 90 % of the supervised images/s, and the data pipeline faster than the step.

    # one GPU, the paper's setting (ResNet-50, 256 images = 512 views at 224 px), ~5 min:
    python benchmarks/gpu_throughput.py --device cuda --workers 8
    # any CPU, small sizes (what `make test` runs as a smoke test):
    python benchmarks/gpu_throughput.py --device cpu --depth 18 --width 0.25 --image-size 32 \\
        --batch-size 16 --images 96 --steps 2 --no-compile --workers 1

Results also go to benchmarks/results/gpu_throughput.json (git-ignored).
"""

import argparse
import io
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a plain script without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.machine import cpu_model  # noqa: E402
from simclrv2.data.step_data import pretrain_data  # noqa: E402
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec  # noqa: E402
from simclrv2.models.resnet import EncoderConfig  # noqa: E402
from simclrv2.models.simclr_model import ContrastiveModel, ModelConfig  # noqa: E402
from simclrv2.objectives.nt_xent import nt_xent_loss  # noqa: E402
from simclrv2.optim.lars import LARS, lars_param_groups  # noqa: E402
from simclrv2.performance import autocast, select_device  # noqa: E402
from simclrv2.shards.loader import make_shard_loader  # noqa: E402
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset  # noqa: E402
from simclrv2.shards.verify import load_manifest  # noqa: E402

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "gpu_throughput.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=224, help="training view side (px)")
    parser.add_argument("--source-size", type=int, default=0,
                        help="stored JPEG side (default: 8/7 of --image-size)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=256, help="images per step (2x views)")
    parser.add_argument("--images", type=int, default=4096, help="images in the local shards")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--no-bf16", action="store_true", help="fp32 instead of bf16 autocast")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variant")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    for name in ("depth", "image_size", "batch_size", "images", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.images < args.batch_size:
        parser.error("--images must be at least --batch-size")
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def write_shards(root: Path, count: int, side: int) -> Path:
    """`count` smooth random JPEGs (side x ~5/4 side, quality 90) in 10 classes, sharded."""
    rng = np.random.default_rng(0)
    folder = root / "images"
    for split, n in (("train", count), ("val", 10)):
        for k in range(n):
            low = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)  # upsampled: JPEG-like content
            image = Image.fromarray(low).resize((side * 5 // 4, side), Image.BICUBIC)
            path = folder / split / f"c{k % 10}" / f"{k:06d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            path.write_bytes(buffer.getvalue())
    output = root / "shards"
    shard_dataset(ShardRequest(str(folder), str(output), LabelSubsetSpec(per_class=1),
                               max_samples_per_shard=max(1, count // 16)))  # fmt: skip
    return output


def loader_for(manifest, data, args, device) -> torch.utils.data.DataLoader:
    return make_shard_loader(
        manifest, "unlabeled", data.transform, batch_size=args.batch_size,
        num_workers=args.workers, shuffle_buffer=0, samples_per_epoch=10**9,
        rank=0, world_size=1, image_mode="rgb", collate_fn=data.collate_fn,
        pin_memory=device.type == "cuda", persistent_workers=True,
    )  # fmt: skip


def time_views(batches, make_views, steps: int, warmup: int, device) -> tuple[float, float]:
    """-> (seconds per batch, device peak MiB) over `steps` batches after `warmup`."""
    for _ in range(warmup):
        make_views(next(batches))
    synchronize(device)
    reset_peak(device)
    start = time.perf_counter()
    for _ in range(steps):
        make_views(next(batches))
    synchronize(device)
    return (time.perf_counter() - start) / steps, peak_mib(device)


class SimclrStep:
    """One pretraining step on (view_a, view_b) already on the device."""

    def __init__(self, args, device, compiled: bool):
        torch.manual_seed(0)
        encoder = EncoderConfig(args.depth, args.width, 0.0, args.image_size <= 32, 3)
        model = ContrastiveModel(ModelConfig(encoder, 3, 128)).to(device)
        self.model = model.to(memory_format=torch.channels_last)
        self.optimizer = LARS(lars_param_groups(self.model, 1e-4), lr=0.3, momentum=0.9)
        self.device, self.bf16 = device, not args.no_bf16
        self.compile_seconds = None
        if compiled:
            self.model.compile()

    def __call__(self, views) -> torch.Tensor:
        images = torch.cat(views).contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.bf16):
            loss, _ = nt_xent_loss(self.model(images), 0.1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class SupervisedStep:
    """The anchor: torchvision's ResNet-50 (or -18/-34/-101/-152), cross-entropy, SGD."""

    def __init__(self, args, device):
        import torchvision

        torch.manual_seed(0)
        model = getattr(torchvision.models, f"resnet{args.depth}")(num_classes=1000)
        self.model = model.to(device).to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.device, self.bf16 = device, not args.no_bf16

    def __call__(self, images, labels) -> torch.Tensor:
        with autocast(self.device, self.bf16):
            loss = F.cross_entropy(self.model(images).float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def main(argv=None) -> int:
    args = parse_args(argv)
    device = select_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    views_per_step = 2 * args.batch_size
    print(f"device {device} ({name}), torch {torch.__version__}, {args.workers} workers, "
          f"ResNet-{args.depth} {args.width:g}x, {args.batch_size} images = {views_per_step} "
          f"views of {args.image_size} px, {'fp32' if args.no_bf16 else 'bf16'} + "
          "channels_last", flush=True)  # fmt: skip
    rows = []

    def report(label: str, seconds: float, per_step: int, unit: str, peak, **extra):
        rate = per_step / seconds
        rows.append({"measure": label, "seconds_per_step": seconds, f"{unit}_per_s": rate,
                     "peak_mib": peak, **extra})  # fmt: skip
        memory = "n/a" if peak is None else f"{peak:.0f} MiB"
        print(f"{label:<44} {seconds * 1000:9.1f} ms/step {rate:10.1f} {unit}/s  peak {memory}",
              flush=True)  # fmt: skip
        return rate

    with tempfile.TemporaryDirectory() as tmp:
        source_side = args.source_size or round(args.image_size * 8 / 7)
        start = time.perf_counter()
        manifest = load_manifest(str(write_shards(Path(tmp), args.images, source_side)))
        print(f"wrote {args.images} JPEGs of {source_side * 5 // 4}x{source_side} px into shards "
              f"in {time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip

        # 1. The data pipeline alone.
        rates = {}
        for pipeline in ("cpu", "gpu"):
            data = pretrain_data(pipeline, device, args.image_size, 1.0, None)
            batches = iter(loader_for(manifest, data, args, device))
            seconds, peak = time_views(batches, lambda b, d=data: d.on_device(b[0], device),
                                       args.steps, args.warmup_steps, device)  # fmt: skip
            rates[pipeline] = report(f"data pipeline alone, {pipeline}", seconds,
                                     views_per_step, "views", peak)  # fmt: skip
            del batches

        # 2. The train step alone, on a fixed batch.
        fixed = [torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
                 for _ in range(2)]  # fmt: skip
        step_rates = {}
        for compiled in (False, True) if not args.no_compile else (False,):
            step = SimclrStep(args, device, compiled)
            started = time.perf_counter()
            step(fixed)
            synchronize(device)
            first = time.perf_counter() - started
            seconds, peak = time_views(iter(lambda: fixed, None), step, args.steps,
                                       args.warmup_steps, device)  # fmt: skip
            label = "SimCLR step alone, " + ("torch.compile" if compiled else "eager")
            step_rates[compiled] = report(label, seconds, views_per_step, "views", peak,
                                          first_step_s=first)  # fmt: skip
            if compiled:
                print(f"{'':<44} (first step incl. compile: {first:.0f} s)")
            del step
        best_compiled = max(step_rates, key=step_rates.get)

        # 3. End to end: shards -> device augmentation -> train step.
        data = pretrain_data("gpu", device, args.image_size, 1.0, None)
        batches = iter(loader_for(manifest, data, args, device))
        e2e_step = SimclrStep(args, device, best_compiled)

        def train(batch):
            return e2e_step(data.on_device(batch[0], device))

        seconds, peak = time_views(batches, train, args.steps, args.warmup_steps, device)
        label = "end to end (gpu data path, " + ("compiled)" if best_compiled else "eager)")
        end_to_end = report(label, seconds, views_per_step, "views", peak)
        del batches

        # 4. The anchor: supervised ResNet on as many images as the SimCLR step has views.
        anchor_rate = None
        if args.width == 1.0 and args.depth in (18, 34, 50, 101, 152):
            anchor = SupervisedStep(args, device)
            shape = (views_per_step, 3, args.image_size, args.image_size)
            images = torch.rand(shape, device=device).contiguous(memory_format=torch.channels_last)
            labels = torch.randint(0, 1000, (views_per_step,), device=device)
            seconds, peak = time_views(iter(lambda: (images, labels), None),
                                       lambda b: anchor(*b), args.steps, args.warmup_steps,
                                       device)  # fmt: skip
            anchor_rate = report(f"supervised torchvision ResNet-{args.depth} step", seconds,
                                 views_per_step, "images", peak)  # fmt: skip

    print()
    fastest_step = max(step_rates.values())
    print(
        f"data pipeline gpu vs cpu: {rates['gpu'] / rates['cpu']:.2f}x; gpu data path vs "
        f"the step it feeds: {rates['gpu'] / fastest_step:.2f}x (> 1: not the bottleneck)"
    )
    if not args.no_compile:
        print(f"torch.compile vs eager step: {step_rates[True] / step_rates[False]:.2f}x")
    if anchor_rate:
        print(f"end-to-end SimCLR views/s vs supervised images/s: {end_to_end / anchor_rate:.2f} "
              "(goal >= 0.90)")  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "when": datetime.now(timezone.utc).isoformat(), "device": str(device),
        "device_name": name, "torch": torch.__version__, "python": platform.python_version(),
        "settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
    }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
