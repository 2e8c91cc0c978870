"""Use every GPU of a step's pod: one process per GPU under torchrun, or in-process on one.

A KFP component runs as a single Python process. When its pod has several GPUs (the ImageNet
profiles attach 8 to each training step), the step relaunches itself through torchrun
(`--standalone`: one node, rendezvous on loopback) with the same configuration, so DDP, global
BN and the gathered negatives span all of them. On one GPU or a CPU it runs in this process.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from simclrv2.config.loading import dump_config
from simclrv2.config.run_config import RunConfig
from simclrv2.storage.uri import join_uri


def local_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def torchrun_command(step: str, config_path: str, output: str, gpus: int, **flags) -> list:
    """`python -m torch.distributed.run ... -m simclrv2.cli STEP --config ... --output ...`;
    flags become `--name value` (underscores to dashes)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={gpus}", "-m", "simclrv2.cli", step,
        "--config", config_path, "--output", output,
    ]  # fmt: skip
    for name, value in flags.items():
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    return command


def run_step(step: str, config: RunConfig, output: str, in_process, **flags) -> str:
    """Run training step `step` (the CLI command name) and return its model URI.

    in_process: a no-argument callable that runs the step here (one GPU, or the CPU).
    flags: the step's CLI flags besides --config and --output (e.g. pretrained=URI).
    """
    gpus = local_gpus()
    if gpus <= 1 or "WORLD_SIZE" in os.environ:  # one device, or already under torchrun
        return in_process().model_uri
    with tempfile.TemporaryDirectory() as folder:
        config_path = str(Path(folder) / "run.yaml")
        Path(config_path).write_text(dump_config(config))
        print(f"[{step}] {gpus} GPUs in this pod: launching one process per GPU (torchrun)")
        subprocess.run(torchrun_command(step, config_path, output, gpus, **flags), check=True)
    return join_uri(output, "model.pt")
