"""Warnings about stages that finished but learned too little (training/stage_health.py)."""

import math

import pytest

from simclrv2.objectives.nt_xent import nt_xent_loss
from simclrv2.training.stage_health import (
    classifier_warnings,
    contrastive_chance_loss,
    contrastive_warnings,
    distillation_warnings,
    student_vs_teacher_warnings,
)


def _history(key, values):
    return [{"step": i + 1, key: v} for i, v in enumerate(values)]


def test_chance_loss_is_what_nt_xent_gives_an_encoder_that_tells_nothing_apart():
    import torch

    same = torch.ones(2 * 64, 16)  # every view identical: every candidate equally likely
    loss, _ = nt_xent_loss(same, temperature=0.5)
    assert loss.item() == pytest.approx(contrastive_chance_loss(64), rel=1e-5)
    assert contrastive_chance_loss(64) == pytest.approx(2 * math.log(127))


def test_a_pretraining_loss_that_stays_put_is_reported():
    flat = _history("loss", [11.0, 10.98, 11.01, 10.97] * 10)
    (warning,) = contrastive_warnings(flat, global_batch=256)
    assert "hardly moved in 40 steps" in warning and "2 ln(2N-1) = 12.473" in warning
    falling = _history("loss", [11.0 - 0.1 * i for i in range(40)])
    assert contrastive_warnings(falling, global_batch=256) == []


def test_a_classifier_at_chance_is_reported():
    stuck = _history("accuracy", [0.1, 0.12, 0.09, 0.11] * 5)
    (warning,) = classifier_warnings(stuck, num_classes=10, stage="finetune")
    assert "at chance (10.0% with 10 classes)" in warning
    assert "finetune.optimizer.min_steps" in warning
    learning = _history("accuracy", [0.1] * 10 + [0.6] * 10)
    assert classifier_warnings(learning, num_classes=10, stage="finetune") == []


def test_a_student_that_does_not_follow_its_teacher_is_reported():
    (warning,) = distillation_warnings(_history("teacher_agreement", [0.1] * 20))
    assert "agrees with its teacher on 10.0%" in warning
    assert distillation_warnings(_history("teacher_agreement", [0.2] * 18 + [0.9] * 2)) == []


def test_a_student_far_below_its_teacher_is_reported_at_evaluation():
    models = {"teacher": {"top1": 0.561}, "student": {"top1": 0.112}}
    (warning,) = student_vs_teacher_warnings(models, max_below_teacher=0.05)
    assert "11.20% top-1" in warning and "44.90% below its teacher" in warning
    models["student"]["top1"] = 0.53
    assert student_vs_teacher_warnings(models, max_below_teacher=0.05) == []


def test_an_empty_history_raises_no_warning():
    assert contrastive_warnings([], 256) == []
    assert classifier_warnings([], 10, "finetune") == []
    assert distillation_warnings([]) == []
