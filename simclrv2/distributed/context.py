"""Process-group set-up for single processes and torchrun launches alike.

torchrun (or a Kubeflow PyTorchJob) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; without them the step runs as one process and needs no launcher. The backend
follows the device: nccl on CUDA, gloo on CPU.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from simclrv2.performance import select_device


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes outputs, checkpoints, metrics and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def expected_world_size() -> int:
    """How many processes this run has, known before joining the process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    if dist.is_available() and dist.is_initialized():  # joined already (e.g. by a test)
        world_size, rank = dist.get_world_size(), dist.get_rank()
    else:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = select_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, chosen)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
