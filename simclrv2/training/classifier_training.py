"""Supervised training and evaluation of a Classifier (fine-tuning and the baseline)."""

import torch
import torch.nn.functional as F
from torch import nn

from simclrv2.performance import autocast, prepare_images
from simclrv2.training.optimizer_step import optimizer_step
from simclrv2.training.progress import Progress


def train_classifier_epochs(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epochs: int,
    device: torch.device,
    channels_last: bool = False,
    bf16: bool = False,
    name: str = "finetune",
    log_every: int = 10,
) -> list[dict]:
    """Cross-entropy training on (images, labels) batches; returns one record per step."""
    model.train()
    history = []
    progress = Progress(name, epochs * len(loader), every=log_every)
    step = 0
    for epoch in range(epochs):
        for images, labels in loader:
            images = prepare_images(images, device, channels_last)
            labels = labels.to(device)
            with autocast(device, bf16):
                logits = model(images)
            loss = F.cross_entropy(logits.float(), labels)
            lr = optimizer_step(loss, optimizer, scheduler)
            step += 1
            accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
            history.append(
                {"step": step, "epoch": epoch, "loss": loss.item(), "accuracy": accuracy, "lr": lr}
            )
            progress.update(step, len(images), loss=loss.item(), acc=accuracy)
    return history


@torch.no_grad()
def predict(
    model: nn.Module,
    loader,
    device: torch.device,
    channels_last: bool = False,
    bf16: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, classes) in fp32 on the CPU, labels (N,)) for every batch of `loader`."""
    model.eval()
    all_logits, all_labels = [], []
    for images, labels in loader:
        with autocast(device, bf16):
            logits = model(prepare_images(images, device, channels_last))
        all_logits.append(logits.float().cpu())
        all_labels.append(labels)
    return torch.cat(all_logits), torch.cat(all_labels)


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """(num_classes, num_classes) counts; row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return hits.float().mean().item()
