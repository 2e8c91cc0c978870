"""Class-balanced, seeded label subsets (the paper's 1% / 10% labels)."""

import math

import torch


def balanced_subset(
    labels: torch.Tensor,
    fraction: float | None = None,
    per_class: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Sorted indices of a class-balanced subset: `per_class` images of every class, or
    round(fraction * N / num_classes) each. The same labels and seed give the same subset.

    fraction 1 is every image, balanced or not: a balanced "100 %" of a dataset whose classes
    differ in size (MNIST: 5,421 to 6,742) would not exist, and the ceiling wants all labels."""
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction (e.g. 0.01) or per_class (e.g. 13)")
    classes = torch.unique(labels)
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(
                f"label fraction must be in (0, 1], e.g. 0.01 for 1 % of the labels; got {fraction}"
            )
        if fraction == 1:
            return torch.arange(len(labels))
        per_class = max(1, math.floor(fraction * len(labels) / len(classes) + 0.5))
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in classes:
        members = torch.nonzero(labels == cls).flatten()
        if len(members) < per_class:
            smallest = min(int((labels == c).sum()) for c in classes)
            # The largest fraction whose rounded share per class is `smallest`.
            largest = math.floor(smallest * len(classes) / len(labels) * 10_000) / 10_000
            fractions = (
                f"a fraction of at most {largest:g}, or fraction 1 (every image, not balanced)"
                if largest < 1
                else "or fraction 1 (every image)"
            )
            raise ValueError(
                f"class {int(cls)} has {len(members)} images, fewer than the {per_class} "
                f"labeled images per class asked for: ask for at most {smallest} per class, "
                f"{fractions}"
            )
        order = torch.randperm(len(members), generator=generator)
        chosen.append(members[order[:per_class]])
    return torch.sort(torch.cat(chosen)).values
