"""Train-step throughput of SimCLRv2 pretraining: fp32 NCHW vs channels_last + bf16 autocast.

One step is what the pretraining loop does per batch: both views of N images go through the
encoder and projection head as one batch of 2N views, NT-Xent (temperature 0.5) is computed,
gradients are back-propagated and LARS takes a step. The input is a fixed random batch (same
seed for both variants), so data loading and augmentation are not measured.

The two variants run side by side in this one process, interleaved: every round times
--steps steps of each variant, and the order within a round alternates (a b, b a, a b, ...)
so that drift (thermal, other load) hits both alike. The reported step time is the median
over rounds of the mean step time in a round. Warm-up steps are not timed.

Throughput is given as images/s, counting each image once although it has two views, and as
views/s (= 2 x images/s), the number of encoder forward/backward passes per second.

Run from the repository root:

    .venv/bin/python benchmarks/train_step_throughput.py
    .venv/bin/python benchmarks/train_step_throughput.py --batch-size 128 --rounds 8

Results also go to benchmarks/results/train_step_throughput.json (git-ignored).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a plain script without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.machine import cpu_model  # noqa: E402
from simclrv2.models.resnet import EncoderConfig  # noqa: E402
from simclrv2.models.simclr_model import ContrastiveModel, ModelConfig  # noqa: E402
from simclrv2.objectives.nt_xent import nt_xent_loss  # noqa: E402
from simclrv2.optim.lars import LARS, lars_param_groups  # noqa: E402
from simclrv2.performance import (  # noqa: E402
    autocast,
    prepare_images,
    prepare_model,
    select_device,
)

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "train_step_throughput.json"
TEMPERATURE = 0.5
WEIGHT_DECAY = 1e-6


@dataclass
class Variant:
    name: str
    channels_last: bool
    bf16: bool
    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    round_step_times: list[float] = field(default_factory=list)
    peak_memory_bytes: int | None = None
    last_loss: float = float("nan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Measure SimCLRv2 pretraining train-step throughput (forward of both views as one "
            "batch of 2N, NT-Xent, backward, LARS step) for two variants run side by side in "
            "one process: (a) baseline fp32 NCHW and (b) channels_last + bf16 autocast. "
            "Rounds alternate the variants; the median round is reported. Images/s counts "
            "each image once (it has two views); views/s = 2 x images/s. bf16 is only fast "
            "on CPUs with native bf16 (AVX-512 BF16 / AMX) and on recent GPUs."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--depth", type=int, default=18, help="ResNet depth")
    parser.add_argument("--width", type=float, default=1.0, help="ResNet width multiplier")
    parser.add_argument(
        "--sk-ratio", type=float, default=0.0, help="selective-kernel ratio (0: plain ResNet)"
    )
    parser.add_argument(
        "--imagenet-stem",
        action="store_true",
        help="use the ImageNet stem (7x7 conv + max-pool) instead of the CIFAR stem",
    )
    parser.add_argument("--image-size", type=int, default=32, help="square image side in pixels")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="images per step (N); the network sees 2N views",
    )
    parser.add_argument(
        "--steps", type=int, default=2, help="timed steps per variant in each round"
    )
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds per variant")
    parser.add_argument(
        "--warmup-steps", type=int, default=2, help="untimed steps per variant before round 1"
    )
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op CPU threads (default: torch's choice, usually the core count)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and input data")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON results"
    )
    args = parser.parse_args(argv)
    for name in ("depth", "image_size", "batch_size", "steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup_steps < 0:
        parser.error("--warmup-steps must be >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def cpu_bf16_flags() -> list[str]:
    """The /proc/cpuinfo flags that decide whether bf16 is fast on this CPU."""
    wanted = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_variant(variant: Variant, config: ModelConfig, device: torch.device, args) -> None:
    torch.manual_seed(args.seed)  # identical initial weights for every variant
    model = prepare_model(ContrastiveModel(config), device, variant.channels_last)
    model.train()
    # The reference's linear scaling: lr = 0.3 * N / 256. Irrelevant to speed, but realistic.
    lr = 0.3 * args.batch_size / 256
    variant.model = model
    variant.optimizer = LARS(lars_param_groups(model, WEIGHT_DECAY), lr=lr, momentum=0.9)


def train_step(variant: Variant, views: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One pretraining step on views (2N, C, H, W): both views stacked, as the loader gives."""
    model, optimizer = variant.model, variant.optimizer
    images = prepare_images(views, device, variant.channels_last)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, variant.bf16):
        projections = model(images)
        loss, _ = nt_xent_loss(projections, TEMPERATURE)
    loss.backward()
    optimizer.step()
    return loss.detach()


def run_steps(variant: Variant, views: torch.Tensor, device: torch.device, steps: int) -> float:
    """Run `steps` steps; return the mean seconds per step (device synchronised)."""
    synchronize(device)
    start = time.perf_counter()
    loss = None
    for _ in range(steps):
        loss = train_step(variant, views, device)
    synchronize(device)
    elapsed = time.perf_counter() - start
    variant.last_loss = float(loss)
    return elapsed / steps


def format_memory(num_bytes: int | None) -> str:
    return "n/a" if num_bytes is None else f"{num_bytes / 2**20:.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()

    config = ModelConfig(
        encoder=EncoderConfig(
            depth=args.depth,
            width_multiplier=args.width,
            sk_ratio=args.sk_ratio,
            cifar_stem=not args.imagenet_stem,
            in_channels=3,
        ),
        num_proj_layers=3,
        proj_out_dim=128,
    )
    generator = torch.Generator().manual_seed(args.seed)
    # Views [0, N) and [N, 2N) are the two views of the same N images (NT-Xent's layout).
    # Kept on the host in NCHW, as a data loader delivers them; each step moves them.
    views = torch.randn(
        2 * args.batch_size, 3, args.image_size, args.image_size, generator=generator
    )
    if device.type == "cuda":
        views = views.pin_memory()

    variants = [
        Variant("fp32 NCHW (baseline)", channels_last=False, bf16=False),
        Variant("channels_last + bf16", channels_last=True, bf16=True),
    ]
    for variant in variants:
        build_variant(variant, config, device, args)
    num_params = sum(p.numel() for p in variants[0].model.parameters())

    print(
        f"SimCLRv2 train step: ResNet-{args.depth} width {args.width:g} "
        f"({'ImageNet' if args.imagenet_stem else 'CIFAR'} stem, {num_params / 1e6:.1f}M params), "
        f"{args.image_size}px, batch {args.batch_size} images = {2 * args.batch_size} views"
    )
    print(
        f"device {device} ({device_name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.warmup_steps} warm-up + "
        f"{args.rounds} rounds x {args.steps} steps per variant",
        flush=True,
    )

    total_start = time.perf_counter()
    if args.warmup_steps:
        for variant in variants:
            seconds = run_steps(variant, views, device, args.warmup_steps)
            print(f"warm-up  {variant.name:<22} {seconds:7.3f} s/step", flush=True)

    for round_index in range(args.rounds):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for variant in order:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = run_steps(variant, views, device, args.steps)
            variant.round_step_times.append(seconds)
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device)
                variant.peak_memory_bytes = max(variant.peak_memory_bytes or 0, peak)
            print(
                f"round {round_index + 1}/{args.rounds} {variant.name:<22} "
                f"{seconds:7.3f} s/step  {args.batch_size / seconds:8.1f} img/s  "
                f"loss {variant.last_loss:.4f}",
                flush=True,
            )
    total_seconds = time.perf_counter() - total_start

    baseline_time = statistics.median(variants[0].round_step_times)
    rows = []
    for variant in variants:
        median_time = statistics.median(variant.round_step_times)
        images_per_s = args.batch_size / median_time
        rows.append(
            {
                "variant": variant.name,
                "channels_last": variant.channels_last,
                "bf16_autocast": variant.bf16,
                "median_step_s": median_time,
                "images_per_s": images_per_s,
                "views_per_s": 2 * images_per_s,
                "speedup_vs_baseline": baseline_time / median_time,
                "peak_memory_bytes": variant.peak_memory_bytes,
                "round_step_s": variant.round_step_times,
                "final_loss": variant.last_loss,
            }
        )
        if not torch.isfinite(torch.tensor(variant.last_loss)):
            print(f"WARNING: {variant.name} ended with a non-finite loss", file=sys.stderr)

    header = (
        f"{'variant':<22} {'median step':>11} {'images/s':>9} {'views/s':>9} "
        f"{'vs baseline':>11} {'peak memory':>11}"
    )
    print()
    print(header)
    print("-" * len(header))
    for row, variant in zip(rows, variants, strict=True):
        print(
            f"{row['variant']:<22} {row['median_step_s']:>9.3f} s {row['images_per_s']:>9.1f} "
            f"{row['views_per_s']:>9.1f} {row['speedup_vs_baseline']:>10.2f}x "
            f"{format_memory(variant.peak_memory_bytes):>11}"
        )
    print(
        "images/s counts each image once (2 views per image); views/s = 2 x images/s. "
        + (
            "Peak memory: torch.cuda.max_memory_allocated."
            if device.type == "cuda"
            else "Peak memory is not measured on CPU (no per-variant allocator statistics)."
        )
    )
    print(f"total {total_seconds:.0f} s")

    results = {
        "benchmark": "train_step_throughput",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "device_name": device_name,
        "cpu_model": cpu_model(),
        "cpu_bf16_flags": cpu_bf16_flags(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "settings": {
            "depth": args.depth,
            "width_multiplier": args.width,
            "sk_ratio": args.sk_ratio,
            "cifar_stem": not args.imagenet_stem,
            "image_size": args.image_size,
            "batch_size_images": args.batch_size,
            "batch_size_views": 2 * args.batch_size,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "warmup_steps": args.warmup_steps,
            "temperature": TEMPERATURE,
            "optimizer": "LARS(momentum=0.9)",
            "weight_decay": WEIGHT_DECAY,
            "seed": args.seed,
            "num_parameters": num_params,
        },
        "method": (
            "variants interleaved per round (order alternating); median over rounds of the "
            "mean step time per round; warm-up excluded; images/s counts each image once"
        ),
        "results": rows,
        "total_seconds": total_seconds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
