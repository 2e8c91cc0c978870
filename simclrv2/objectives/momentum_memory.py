"""The paper's optional memory: a momentum (EMA) encoder and a queue of its projections,
used as extra negatives for NT-Xent (MoCo-style; worth about +1% top-1 in the paper).

The released reference code has no memory, so the combination is ours and kept minimal:
NT-Xent is computed as usual on the online network's 2N views, and every anchor also gets
the K queued projections as negatives. The queue holds L2-normalised projections of earlier
batches from the momentum encoder (the online network's exponential moving average, decay
0.999), which changes slowly enough that old entries stay comparable. With an empty queue
the loss is exactly NT-Xent.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from simclrv2.distributed.gather import all_gather_with_grad


class MomentumMemory:
    def __init__(self, model: nn.Module, momentum: float, queue_size: int, dim: int):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.encoder = copy.deepcopy(getattr(model, "module", model))
        self.encoder.requires_grad_(False)
        device = next(self.encoder.parameters()).device
        self.queue = torch.zeros(queue_size, dim, device=device)
        self.filled = 0  # entries in use (the queue starts empty)
        self.position = 0  # where the next entries go (FIFO, wrapping)

    @torch.no_grad()
    def keys(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised momentum-encoder projections of `images` (what gets queued)."""
        return F.normalize(self.encoder(images).float(), dim=1)

    def negatives(self) -> torch.Tensor:
        return self.queue[: self.filled]

    @torch.no_grad()
    def update(self, model: nn.Module, keys: torch.Tensor) -> None:
        """After an optimizer step: EMA of the weights, then enqueue this step's keys from
        every process (so all ranks hold the same queue)."""
        online = getattr(model, "module", model)
        for ema, param in zip(self.encoder.parameters(), online.parameters(), strict=True):
            ema.lerp_(param.detach(), 1 - self.momentum)
        for ema, buffer in zip(self.encoder.buffers(), online.buffers(), strict=True):
            ema.copy_(buffer)
        keys = all_gather_with_grad(keys.detach())
        size = len(self.queue)
        keys = keys[-size:]  # more keys than the queue holds: keep the newest
        rows = (self.position + torch.arange(len(keys), device=keys.device)) % size
        self.queue[rows] = keys.to(self.queue.dtype)
        self.position = (self.position + len(keys)) % size
        self.filled = min(size, self.filled + len(keys))

    def state_dict(self) -> dict:
        return {
            "encoder": self.encoder.state_dict(),
            "queue": self.queue.cpu(),
            "filled": self.filled,
            "position": self.position,
        }

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.queue.copy_(state["queue"])
        self.filled, self.position = state["filled"], state["position"]
