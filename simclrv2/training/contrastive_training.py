"""The pretraining loop: two views per image, NT-Xent, LARS with warmup + cosine."""

import torch
from torch import nn

from simclrv2.objectives.nt_xent import nt_xent_loss
from simclrv2.performance import autocast, prepare_images
from simclrv2.training.optimizer_step import optimizer_step
from simclrv2.training.progress import Progress


def pretrain_epochs(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epochs: int,
    temperature: float,
    device: torch.device,
    channels_last: bool = False,
    bf16: bool = False,
    log_every: int = 10,
) -> list[dict]:
    """Trains `model` (images -> projections) in place; returns one record per step.

    `loader` yields ((view_a, view_b), labels); labels are ignored (unlabeled training).
    """
    model.train()
    history = []
    progress = Progress("pretrain", epochs * len(loader), every=log_every)
    step = 0
    for epoch in range(epochs):
        for (view_a, view_b), _ in loader:
            images = prepare_images(torch.cat([view_a, view_b]), device, channels_last)
            with autocast(device, bf16):
                loss, accuracy = nt_xent_loss(model(images), temperature)
            lr = optimizer_step(loss, optimizer, scheduler)
            step += 1
            record = {
                "step": step,
                "epoch": epoch,
                "loss": loss.item(),
                "contrastive_accuracy": accuracy.item(),
                "learning_rate": lr,
            }
            history.append(record)
            progress.update(
                step, len(view_a), loss=record["loss"], acc=record["contrastive_accuracy"], lr=lr
            )
    return history
