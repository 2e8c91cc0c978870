"""Predictions and classification metrics of a Classifier (evaluation)."""

import torch
from torch import nn

from simclrv2.performance import autocast, prepare_images


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
