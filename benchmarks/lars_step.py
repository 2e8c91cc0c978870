"""LARS optimizer step alone: the per-tensor loop vs multi-tensor (foreach) kernels.

The model's parameters get fixed random gradients; each variant (its own copy of the model
and its own LARS with the reference's parameter groups) takes --steps steps per round, the
two interleaved with alternating order so that drift hits both alike; the reported time is
the median over rounds. The step is what a training step pays after backward: at ResNet-50
size (161 tensors) the loop launches ~10 kernels per tensor.

    .venv/bin/python benchmarks/lars_step.py                      # ResNet-50 on CPU
    .venv/bin/python benchmarks/lars_step.py --device cuda --depth 152 --width 3
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a plain script without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from simclrv2.models.resnet import EncoderConfig, ResNet  # noqa: E402
from simclrv2.optim.lars import LARS, lars_param_groups  # noqa: E402


def _variant(args, foreach: bool):
    torch.manual_seed(0)
    model = ResNet(EncoderConfig(args.depth, args.width)).to(args.device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    optimizer = LARS(lars_param_groups(model, 1e-6), lr=0.3, foreach=foreach)
    return model, optimizer


def _time(optimizer, steps: int, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)

    variants = {"loop (baseline)": _variant(args, False), "foreach": _variant(args, True)}
    tensors = sum(1 for _ in variants["foreach"][0].parameters())
    for _, optimizer in variants.values():  # warm-up: buffers allocated, kernels loaded
        _time(optimizer, 1, args.device)
    times = {name: [] for name in variants}
    for round_index in range(args.rounds):
        order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
        for name in order:
            times[name].append(_time(variants[name][1], args.steps, args.device))
    base = statistics.median(times["loop (baseline)"])
    print(
        f"LARS step, ResNet-{args.depth} {args.width:g}x ({tensors} tensors) on {args.device}, "
        f"torch {torch.__version__}, median of {args.rounds} rounds x {args.steps} steps"
    )
    print(f"| {'variant':<16} | {'step':>10} | {'vs baseline':>11} |")
    print(f"|{'-' * 18}|{'-' * 12}:|{'-' * 12}:|")
    for name, measured in times.items():
        median = statistics.median(measured)
        print(f"| {name:<16} | {median * 1e3:>7.1f} ms | {base / median:>10.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
