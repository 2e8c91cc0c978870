"""Use every GPU of a step: one process per GPU under torchrun, across nodes when the profile
asks for several.

A KFP component runs as a single Python process. When its pod has several GPUs (the ImageNet
profiles attach 8 to each training step), the step relaunches itself through torchrun
(`--standalone`: one node, rendezvous on loopback) with the same configuration, so DDP, global
BN and the gathered negatives span all of them. On one GPU or a CPU it runs in this process.
When the pipeline made the step multi-node (SIMCLRV2_TRAINJOB), this task only launches and
watches a Kubeflow Trainer TrainJob (simclrv2/multinode/launcher.py).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from simclrv2.config.loading import dump_config
from simclrv2.config.run_config import RunConfig
from simclrv2.multinode.node_spec import spec_from_environment
from simclrv2.storage.uri import join_uri


def local_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


#: What Kubeflow Trainer's torch plugin sets on every node; torchrun reads PET_<OPTION> as
#: the default of --<option>, so under Trainer the rendezvous needs no flags.
TRAINER_RENDEZVOUS_ENV = ("PET_NNODES", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")


def under_trainer() -> bool:
    return "PET_NNODES" in os.environ


def torchrun_command(
    step: str, config_path: str, output: str, processes: int | None,
    python: str = sys.executable, **flags,
) -> list:  # fmt: skip
    """`python -m torch.distributed.run ... -m simclrv2.cli STEP --config ... --output ...`;
    flags become `--name value` (underscores to dashes).

    processes: one node of that many processes (`--standalone`); None: the node count, this
    node's rank, processes per node and the master all come from Trainer's PET_* variables.
    """
    command = [python, "-m", "torch.distributed.run"]
    if processes is not None:
        command += ["--standalone", f"--nproc_per_node={processes}"]
    command += ["-m", "simclrv2.cli", step, "--config", config_path, "--output", output]
    for name, value in flags.items():
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    return command


def run_step(step: str, config: RunConfig, output: str, in_process, **flags) -> str:
    """Run training step `step` (the CLI command name) and return its model URI.

    in_process: a no-argument callable that runs the step here (one GPU, or the CPU).
    flags: the step's CLI flags besides --config and --output (e.g. pretrained=URI).
    """
    if "WORLD_SIZE" in os.environ:  # already under torchrun
        return in_process().model_uri
    spec = spec_from_environment()
    if spec is not None:
        from simclrv2.multinode.launcher import backend_from_environment, run_multinode_step

        backend = backend_from_environment(spec)
        return run_multinode_step(step, config, output, spec, backend, **flags)
    gpus = local_gpus()
    if gpus <= 1 and not under_trainer():  # one device
        return in_process().model_uri
    with tempfile.TemporaryDirectory() as folder:
        config_path = str(Path(folder) / "run.yaml")
        Path(config_path).write_text(dump_config(config))
        processes = None if under_trainer() else gpus  # never --standalone on a Trainer node
        print(f"[{step}] launching one process per GPU (torchrun, {gpus} GPUs here)")
        subprocess.run(torchrun_command(step, config_path, output, processes, **flags),
                       check=True)  # fmt: skip
    return join_uri(output, "model.pt")
