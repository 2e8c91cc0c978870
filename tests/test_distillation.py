"""Distillation loss: soft cross-entropy at temperature tau, optional labeled mix."""

import math

import pytest
import torch
import torch.nn.functional as F

from simclrv2.objectives.distillation import distillation_loss, teacher_probabilities


def test_matches_the_paper_formula_by_hand():
    student = torch.tensor([[1.0, 2.0, 0.5]])
    teacher = torch.tensor([[0.2, 1.0, -1.0]])
    tau = 0.5
    p_t = [math.exp(v / tau) for v in teacher[0].tolist()]
    p_t = [v / sum(p_t) for v in p_t]
    s = [v / tau for v in student[0].tolist()]
    log_z = math.log(sum(math.exp(v) for v in s))
    expected = -sum(p * (v - log_z) for p, v in zip(p_t, s, strict=True))
    loss = distillation_loss(student, teacher_probabilities(teacher, tau), tau)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_minimum_is_at_the_teacher_and_equals_its_entropy():
    teacher_logits = torch.randn(6, 5)
    probs = teacher_probabilities(teacher_logits, 1.0)
    at_teacher = distillation_loss(teacher_logits, probs, 1.0)
    entropy = -(probs * probs.log()).sum(-1).mean()
    assert at_teacher.item() == pytest.approx(entropy.item(), rel=1e-5)
    assert distillation_loss(torch.randn(6, 5), probs, 1.0) > at_teacher
    # Gradient vanishes at the teacher: softmax(s/tau) == p_T.
    student = teacher_logits.clone().requires_grad_(True)
    distillation_loss(student, probs, 1.0).backward()
    assert student.grad.abs().max() < 1e-6


def test_temperature_squared_and_alpha_mix():
    student, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    probs = teacher_probabilities(torch.randn(4, 3), 2.0)
    plain = distillation_loss(student, probs, 2.0)
    assert distillation_loss(student, probs, 2.0, temperature_squared=True) == pytest.approx(
        4 * plain.item()
    )
    mixed = distillation_loss(student, probs, 2.0, labels=labels, alpha=0.3)
    expected = 0.7 * plain + 0.3 * F.cross_entropy(student, labels)
    assert mixed.item() == pytest.approx(expected.item(), rel=1e-6)
    only_labels = distillation_loss(student, probs, 2.0, labels=labels, alpha=1.0)
    assert only_labels.item() == pytest.approx(F.cross_entropy(student, labels).item())


def test_bad_arguments_are_rejected():
    probs = teacher_probabilities(torch.randn(2, 3), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(torch.randn(2, 3), probs, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(torch.randn(2, 3), probs, 1.0, alpha=1.5)
    with pytest.raises(ValueError, match="labels are required"):
        distillation_loss(torch.randn(2, 3), probs, 1.0, alpha=0.5)
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(torch.randn(2, 4), probs, 1.0)
