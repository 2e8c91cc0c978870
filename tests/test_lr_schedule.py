"""Learning-rate scaling and warmup + cosine schedule against the reference formulas."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from simclrv2.optim.lr_schedule import (
    scale_learning_rate,
    total_steps_for,
    warmup_cosine_lr,
    warmup_cosine_scheduler,
    warmup_steps_for,
)

IMAGENET_TRAIN = 1_281_167


def _expected_lr(step, peak, warmup, total):
    """Independent NumPy transcription of WarmUpAndCosineDecay + Keras CosineDecay(alpha=0)."""
    if step < warmup:
        return step / warmup * peak
    decay = total - warmup
    s = np.minimum(step - warmup, decay)
    return peak * 0.5 * (1.0 + np.cos(np.pi * s / decay))


def test_scale_learning_rate_recipes():
    assert scale_learning_rate(0.3, 4096, "linear") == pytest.approx(4.8)
    assert scale_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
    assert scale_learning_rate(0.075, 512, "sqrt") == pytest.approx(0.075 * math.sqrt(512))
    assert scale_learning_rate(0.075, 512, "sqrt") == pytest.approx(1.6970563, rel=1e-7)
    assert scale_learning_rate(0.1, 4096, "sqrt") == pytest.approx(6.4)
    assert scale_learning_rate(0.005, 1024, "sqrt") == pytest.approx(0.16)
    assert scale_learning_rate(0.3, 256, "linear") == pytest.approx(0.3)
    assert scale_learning_rate(0.3, 512, "linear") == pytest.approx(0.6)


def test_scale_learning_rate_rejects_unknown_scaling():
    with pytest.raises(ValueError, match=r"linear.*sqrt"):
        scale_learning_rate(0.3, 4096, "cubic")
    with pytest.raises(ValueError, match="batch_size"):
        scale_learning_rate(0.3, 0, "linear")


def test_imagenet_step_counts():
    # (10 * 1281167) // 4096 = 12811670 // 4096 = 3127 (3127.85 floored; round() is a no-op).
    assert 10 * IMAGENET_TRAIN // 4096 == 3127
    assert warmup_steps_for(10, IMAGENET_TRAIN, 4096) == 3127
    # 1281167 * 100 // 4096 + 1 = 31278 + 1.
    assert IMAGENET_TRAIN * 100 // 4096 == 31278
    assert total_steps_for(100, IMAGENET_TRAIN, 4096) == 31279
    assert total_steps_for(100, IMAGENET_TRAIN, 4096, train_steps=500) == 500
    # 5% of 800 epochs (the paper's warmup) = 40 epochs.
    assert warmup_steps_for(0.05 * 800, IMAGENET_TRAIN, 4096) == 40 * IMAGENET_TRAIN // 4096


def test_step_count_formulas_small():
    assert warmup_steps_for(0, 1000, 64) == 0
    assert warmup_steps_for(2.5, 1000, 64) == 39  # 2500 / 64 = 39.06
    assert warmup_steps_for(0.5, 100, 64) == 0
    assert total_steps_for(3, 1000, 64) == 3000 // 64 + 1 == 47
    assert total_steps_for(1, 1024, 64) == 17  # the reference adds a step even when exact
    for fn in (warmup_steps_for, total_steps_for):
        with pytest.raises(ValueError):
            fn(1, 100, 0)
        with pytest.raises(ValueError):
            fn(-1, 100, 8)


def test_warmup_cosine_key_points():
    peak, warmup, total = 4.8, 100, 1100
    assert warmup_cosine_lr(0, peak, warmup, total) == 0.0
    assert warmup_cosine_lr(50, peak, warmup, total) == pytest.approx(peak / 2)
    assert warmup_cosine_lr(warmup, peak, warmup, total) == pytest.approx(peak)
    assert warmup_cosine_lr(600, peak, warmup, total) == pytest.approx(peak / 2)
    assert warmup_cosine_lr(total, peak, warmup, total) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine_lr(total + 1, peak, warmup, total) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine_lr(10 * total, peak, warmup, total) == pytest.approx(0.0, abs=1e-12)
    # A quarter of the way through the decay: 0.5 * (1 + cos(pi / 4)).
    expected = peak * 0.5 * (1 + math.sqrt(0.5))
    assert warmup_cosine_lr(350, peak, warmup, total) == pytest.approx(expected)


def test_warmup_cosine_matches_reference_everywhere():
    peak, warmup, total = 1.7, 7, 31
    for step in range(total + 5):
        assert warmup_cosine_lr(step, peak, warmup, total) == pytest.approx(
            _expected_lr(step, peak, warmup, total), rel=1e-12, abs=1e-15
        )


def test_warmup_cosine_is_monotone():
    values = [warmup_cosine_lr(s, 1.0, 10, 50) for s in range(60)]
    assert all(a < b for a, b in itertools.pairwise(values[:11]))
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))


def test_no_warmup_starts_at_peak():
    assert warmup_cosine_lr(0, 0.16, 0, 1000) == pytest.approx(0.16)
    assert warmup_cosine_lr(500, 0.16, 0, 1000) == pytest.approx(0.08)
    assert warmup_cosine_lr(1000, 0.16, 0, 1000) == pytest.approx(0.0, abs=1e-15)


def test_imagenet_schedule():
    peak = scale_learning_rate(0.3, 4096, "linear")
    warmup = warmup_steps_for(10, IMAGENET_TRAIN, 4096)
    total = total_steps_for(100, IMAGENET_TRAIN, 4096)
    for step in (0, 1, 1563, 3126, 3127, 3128, 17000, 31278, 31279, 40000):
        assert warmup_cosine_lr(step, peak, warmup, total) == pytest.approx(
            _expected_lr(step, peak, warmup, total), rel=1e-12, abs=1e-15
        )


def test_warmup_cosine_validation():
    with pytest.raises(ValueError, match="step"):
        warmup_cosine_lr(-1, 1.0, 10, 100)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine_lr(0, 1.0, -1, 100)
    with pytest.raises(ValueError, match="total_steps"):
        warmup_cosine_lr(0, 1.0, 10, 5)
    # Degenerate: the whole run is warmup; nothing is left to decay.
    assert warmup_cosine_lr(10, 1.0, 10, 10) == 0.0


def test_scheduler_reproduces_function_on_real_optimizer():
    peak, warmup, total = 0.6, 4, 15
    p = nn.Parameter(torch.zeros(2))
    q = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [q], "lr": 99.0}], lr=123.0, momentum=0.9)
    sched = warmup_cosine_scheduler(opt, peak, warmup, total)
    seen = []
    for step in range(total + 4):
        expected = _expected_lr(step, peak, warmup, total)
        for group in opt.param_groups:
            assert group["lr"] == pytest.approx(expected, rel=1e-12, abs=1e-15)
        seen.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(2)
        q.grad = torch.ones(2)
        opt.step()
        if step == 0:
            # The first update uses the rate of step 0, which is 0 during warmup.
            torch.testing.assert_close(p.detach(), torch.zeros(2))
        sched.step()
    assert max(seen) == pytest.approx(peak)
    assert all(g["initial_lr"] == peak for g in opt.param_groups)


def test_scheduler_state_dict_resumes():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = warmup_cosine_scheduler(opt, 2.0, 3, 10)
    for _ in range(5):
        opt.step()
        sched.step()
    state = sched.state_dict()

    p2 = nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([p2], lr=1.0)
    sched2 = warmup_cosine_scheduler(opt2, 2.0, 3, 10)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(_expected_lr(6, 2.0, 3, 10))
