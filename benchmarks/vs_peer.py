"""Our SimCLR pretraining step against lightly's, side by side in one process, on this CPU.

lightly (github.com/lightly-ai/lightly) is the most used PyTorch SimCLR library. Its SimCLR
step, as its CIFAR-10 benchmark builds it: torchvision's ResNet-18 with a CIFAR stem (3x3
conv, no max-pool) and the fc removed, SimCLRProjectionHead(512, 512, 128), NTXentLoss, SGD
with momentum, fp32 NCHW, both views forwarded as one batch. Ours: the same network shape
(simclrv2 ResNet-18, CIFAR stem, 3-layer head), NT-Xent and LARS, with the settings a run
uses by default on this machine (channels_last; bf16 autocast only where the CPU computes bf16
natively), and fp32 channels_last for a precision-matched ratio.

lightly is not a project dependency: the script installs it into a throwaway virtual
environment (benchmarks/.peer-venv, git-ignored) that sees this project's torch, and re-runs
itself there. Rounds alternate the variants; the median round is reported.

    .venv/bin/python benchmarks/vs_peer.py                  # ResNet-18, batch 128, 32 px
    .venv/bin/python benchmarks/vs_peer.py --batch-size 256 --rounds 6
"""

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = REPO_ROOT / "benchmarks" / ".peer-venv"
LIGHTLY = "lightly==1.6.0"


def ensure_peer_environment() -> None:
    """Re-run this script inside a venv that has lightly and sees our torch and package."""
    try:
        import lightly  # noqa: F401

        return
    except ImportError:
        pass
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"[vs_peer] creating {PEER_VENV} with {LIGHTLY} (a throwaway venv)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        # Our site-packages (torch, torchvision, simclrv2) go on its path; pip then installs
        # only what lightly adds.
        ours = sysconfig.get_paths()["purelib"]
        peer = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        Path(peer, "simclrv2-project.pth").write_text(f"{ours}\n{REPO_ROOT}\n")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", LIGHTLY], check=True)  # fmt: skip
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def lightly_step_parts(channels: int):
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    resnet = torchvision.models.resnet18()
    resnet.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)  # CIFAR stem
    resnet.maxpool = nn.Identity()
    backbone = nn.Sequential(*list(resnet.children())[:-1])
    model = nn.Sequential(backbone, nn.Flatten(1), SimCLRProjectionHead(512, 512, 128))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    return model, NTXentLoss(temperature=0.5), optimizer


class Variant:
    def __init__(self, name, model, loss, optimizer, channels_last: bool, bf16: bool):
        self.name, self.model, self.loss, self.optimizer = name, model, loss, optimizer
        self.channels_last, self.bf16 = channels_last, bf16
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.times: list[float] = []

    def step(self, view_a, view_b) -> None:
        images = torch.cat([view_a, view_b])
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            projections = self.model(images)
            loss = self.loss(*projections.float().chunk(2))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def our_variant(name: str, channels: int, channels_last: bool, bf16: bool) -> Variant:
    from simclrv2.models.resnet import EncoderConfig
    from simclrv2.models.simclr_model import ContrastiveModel, ModelConfig
    from simclrv2.objectives.nt_xent import nt_xent_loss
    from simclrv2.optim.lars import LARS, lars_param_groups

    torch.manual_seed(0)
    model = ContrastiveModel(ModelConfig(EncoderConfig(18, 1.0, 0.0, True, channels), 3, 128))
    optimizer = LARS(lars_param_groups(model, 1e-4), lr=0.3, momentum=0.9)

    def loss(a, b):
        return nt_xent_loss(torch.cat([a, b]), 0.5)[0]

    return Variant(name, model, loss, optimizer, channels_last, bf16)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128, help="images (2x views)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    args = parser.parse_args(argv)
    ensure_peer_environment()
    import lightly

    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.machine import cpu_model
    from simclrv2.config.run_config import RuntimeSettings
    from simclrv2.steps.training_setup import bf16_enabled

    native_bf16 = bf16_enabled(RuntimeSettings(), torch.device("cpu"))
    torch.manual_seed(0)
    model, loss, optimizer = lightly_step_parts(3)
    variants = [
        Variant(f"lightly {lightly.__version__} (fp32 NCHW)", model, loss, optimizer, False,
                False),
        our_variant("ours, fp32 channels_last", 3, True, False),
    ]  # fmt: skip
    if native_bf16:
        variants.append(our_variant("ours, default (bf16 + channels_last)", 3, True, True))
    view_a, view_b = torch.rand(2, args.batch_size, 3, args.image_size, args.image_size)
    print(f"CPU {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"ATen {torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16}; "
          f"ResNet-18 CIFAR stem, {args.batch_size} images x 2 views of {args.image_size} px",
          flush=True)  # fmt: skip
    for variant in variants:  # warm-up
        variant.step(view_a, view_b)
    for round_index in range(args.rounds):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for variant in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                variant.step(view_a, view_b)
            variant.times.append((time.perf_counter() - start) / args.steps)
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{v.name} {v.times[-1]:.2f} s" for v in variants), flush=True)  # fmt: skip
    base = statistics.median(variants[0].times)
    print(f"\n{'variant':<40} {'median step':>11} {'images/s':>9} {'vs lightly':>10}")
    for variant in variants:
        median = statistics.median(variant.times)
        print(f"{variant.name:<40} {median:9.3f} s {args.batch_size / median:9.1f} "
              f"{base / median:9.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
