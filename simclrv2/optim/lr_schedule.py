"""Learning-rate scaling and the linear-warmup + cosine-decay schedule of SimCLR/SimCLRv2.

Ported from ``WarmUpAndCosineDecay`` and ``get_train_steps`` in google-research/simclr
``tf2/model.py``. The peak learning rate is a base rate scaled by the batch size, the rate
rises linearly from 0 over the warmup steps, then follows a cosine from the peak down to 0
(Keras ``CosineDecay`` with ``alpha=0``) over the remaining steps, and stays at 0 afterwards.

Recipe values:

* Pretraining, reference code defaults: base 0.3 with ``linear`` scaling
  (``0.3 * 4096 / 256 = 4.8``), LARS, momentum 0.9, 10 warmup epochs. The README's SimCLRv2
  commands use base 0.075 with ``sqrt`` scaling (``0.075 * sqrt(4096) = 4.8``).
* Pretraining, SimCLRv2 paper: ``0.1 * sqrt(batch)`` (6.4 at batch 4096), warmup over the
  first 5% of the epochs.
* Fine-tuning, SimCLRv2 paper: LARS with ``0.005 * sqrt(batch)`` (0.16 at batch 1024) and
  no warmup (``warmup_epochs=0``).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "LR_SCALINGS",
    "scale_learning_rate",
    "total_steps_for",
    "warmup_cosine_lr",
    "warmup_cosine_scheduler",
    "warmup_steps_for",
]

#: Allowed values of ``scaling`` in :func:`scale_learning_rate`.
LR_SCALINGS = ("linear", "sqrt")


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def scale_learning_rate(base_lr: float, batch_size: int, scaling: str) -> float:
    """Peak learning rate for ``batch_size``.

    ``"linear"``: ``base_lr * batch_size / 256``; ``"sqrt"``: ``base_lr * sqrt(batch_size)``.
    """
    _check_positive_int("batch_size", batch_size)
    if scaling == "linear":
        return base_lr * batch_size / 256.0
    if scaling == "sqrt":
        return base_lr * math.sqrt(batch_size)
    raise ValueError(
        f"unknown learning rate scaling {scaling!r}; expected one of {', '.join(LR_SCALINGS)}"
    )


def warmup_steps_for(warmup_epochs: float, num_examples: int, batch_size: int) -> int:
    """Number of warmup steps, as the reference computes it.

    The reference writes ``int(round(warmup_epochs * num_examples // batch_size))``. Python
    evaluates ``(warmup_epochs * num_examples) // batch_size`` first, which is already a whole
    number, so the ``round`` never rounds: the result is the *floor* of the exact quotient
    (10 epochs of ImageNet's 1,281,167 images at batch 4096 give 3127, not 3128).
    """
    _check_positive_int("batch_size", batch_size)
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be non-negative, got {warmup_epochs!r}")
    if num_examples < 0:
        raise ValueError(f"num_examples must be non-negative, got {num_examples!r}")
    # Floor division already yields a whole number (a float when warmup_epochs is), so the
    # reference's round() is the identity and int() only changes the type.
    return int(warmup_epochs * num_examples // batch_size)


def total_steps_for(epochs: float, num_examples: int, batch_size: int, train_steps: int = 0) -> int:
    """Number of training steps: ``train_steps`` if non-zero, else
    ``num_examples * epochs // batch_size + 1`` (the reference's ``get_train_steps``).
    """
    _check_positive_int("batch_size", batch_size)
    if train_steps < 0:
        raise ValueError(f"train_steps must be non-negative, got {train_steps!r}")
    if train_steps:
        return int(train_steps)
    if epochs < 0:
        raise ValueError(f"epochs must be non-negative, got {epochs!r}")
    if num_examples < 0:
        raise ValueError(f"num_examples must be non-negative, got {num_examples!r}")
    return int(num_examples * epochs // batch_size + 1)


def warmup_cosine_lr(step: int, peak_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    ``step < warmup_steps``: ``step / warmup_steps * peak_lr``. Afterwards, with
    ``s = step - warmup_steps`` and ``D = total_steps - warmup_steps``:
    ``peak_lr * 0.5 * (1 + cos(pi * min(s, D) / D))``, which reaches 0 at ``total_steps`` and
    stays there. With ``D == 0`` the rate after warmup is 0.
    """
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step!r}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be non-negative, got {warmup_steps!r}")
    if total_steps < warmup_steps:
        raise ValueError(
            f"total_steps ({total_steps}) must be at least warmup_steps ({warmup_steps})"
        )
    if step < warmup_steps:
        return step / float(warmup_steps) * peak_lr
    decay_steps = total_steps - warmup_steps
    if decay_steps == 0:
        return 0.0
    progress = min(step - warmup_steps, decay_steps) / decay_steps
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, peak_lr: float, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that sets every group's ``lr`` to ``warmup_cosine_lr(step, peak_lr, ...)``.

    Every group's ``lr`` and ``initial_lr`` are overwritten with ``peak_lr``. Call
    ``scheduler.step()`` after each ``optimizer.step()``; the first optimizer step then uses
    the rate of step 0 (0 when there is warmup), as in the reference, whose schedule is read at
    ``optimizer.iterations`` before the update.
    """
    # Validate the arguments once, here, rather than at the first step.
    warmup_cosine_lr(0, peak_lr, warmup_steps, total_steps)
    for group in optimizer.param_groups:
        group["lr"] = peak_lr
        group["initial_lr"] = peak_lr

    def multiplier(step: int) -> float:
        return warmup_cosine_lr(step, 1.0, warmup_steps, total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
