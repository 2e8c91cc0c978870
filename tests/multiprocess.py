"""Run a function in several processes joined by a gloo process group (torch.distributed),
the way torchrun would on CPU, and collect what each rank returns."""

import socket
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_on_ranks(fn: Callable, world_size: int, tmp_path: Path, *args) -> list:
    """fn(rank, world_size, *args) runs on every rank; returns [result of rank 0, 1, ...].

    fn must be a module-level function (it is pickled into spawned processes).
    """
    port = free_port()
    mp.spawn(_worker, args=(world_size, port, fn, args, str(tmp_path)), nprocs=world_size)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
