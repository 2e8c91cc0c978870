"""Bar chart comparing models: top-1 and top-5 test accuracy side by side (PNG, headless)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: containers and CI have no display

import matplotlib.pyplot as plt


def plot_accuracy_bars(results: dict[str, dict], path: str | Path, title: str) -> Path:
    """One group of bars per model: {"name": {"top1": 0.75, "top5": 0.99, ...}} -> PNG."""
    path = Path(path)
    names = list(results)
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(names) + 2), 4))
    for offset, key, label in ((-width / 2, "top1", "top-1"), (width / 2, "top5", "top-5")):
        values = [100 * results[name][key] for name in names]
        bars = ax.bar([i + offset for i in range(len(names))], values, width, label=label)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8, padding=2)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 110)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
