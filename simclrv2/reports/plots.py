"""Plots people look at: training curves and confusion matrices (PNG, no display needed)."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: containers and CI have no display

import matplotlib.pyplot as plt
import torch


def plot_curves(
    series: dict[str, Sequence[float]], path: str | Path, title: str, xlabel: str = "step",
    x: dict[str, Sequence[float]] | None = None,
) -> Path:  # fmt: skip
    """One panel per named series (e.g. loss, contrastive accuracy, learning rate); x gives a
    series' positions (a sparse one, such as a per-epoch kNN accuracy), else 1, 2, 3, ..."""
    path = Path(path)
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.5), squeeze=False)
    for ax, (name, values) in zip(axes[0], series.items(), strict=True):
        positions = (x or {}).get(name) or range(1, len(values) + 1)
        sparse = len(values) < 20
        ax.plot(positions, values, linewidth=1.2, marker="o" if sparse else None)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion_matrix(
    matrix: torch.Tensor, class_names: Sequence[str], path: str | Path, title: str
) -> Path:
    """Row-normalised confusion matrix with the counts written in each cell."""
    path = Path(path)
    counts = matrix.float()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = max(5.0, 0.55 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for row in range(len(class_names)):
        for col in range(len(class_names)):
            color = "white" if rates[row, col] > 0.5 else "black"
            ax.text(
                col, row, int(counts[row, col]), ha="center", va="center", color=color, fontsize=7
            )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
