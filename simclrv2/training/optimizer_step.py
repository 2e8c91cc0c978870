"""One optimisation step, shared by every training loop."""

import torch


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> float:
    """Backward, update, advance the schedule; returns the learning rate the update used."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    lr = optimizer.param_groups[0]["lr"]
    scheduler.step()
    return lr
