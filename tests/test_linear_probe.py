"""Linear evaluation on frozen features: learns what is linearly separable, no more."""

import pytest
import torch

from simclrv2.evaluation.linear_probe import fit_linear_probe


def clusters(n_per_class: int, classes: int, dim: int, noise: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + noise * torch.randn(len(labels), dim, generator=generator), labels


def test_separable_classes_are_learned_and_the_decay_is_chosen_on_held_out_data():
    train, train_labels = clusters(30, 4, 10, 0.5, seed=0)
    test, test_labels = clusters(20, 4, 10, 0.5, seed=0)  # same centres (same seed), new noise
    probe = fit_linear_probe(train, train_labels, 4)
    assert probe.accuracy(test, test_labels) > 0.95
    assert probe.validation_accuracy > 0.9
    assert probe.weight_decay in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def test_labels_unrelated_to_the_features_give_chance():
    torch.manual_seed(0)
    features, labels = torch.randn(400, 16), torch.randint(0, 5, (400,))
    test, test_labels = torch.randn(400, 16), torch.randint(0, 5, (400,))
    probe = fit_linear_probe(features, labels, 5)
    assert probe.accuracy(test, test_labels) < 0.35


def test_a_linearly_inseparable_task_stays_unsolved():
    """Inside or outside the median circle of an isotropic Gaussian: every half-plane cuts
    both classes alike, so no linear classifier beats about half."""
    torch.manual_seed(1)
    x = torch.randn(1600, 2)
    y = (x.norm(dim=1) > x.norm(dim=1).median()).long()
    probe = fit_linear_probe(x[:800], y[:800], 2)
    assert probe.accuracy(x[800:], y[800:]) < 0.6


def test_too_few_images():
    with pytest.raises(ValueError, match="at least 2"):
        fit_linear_probe(torch.randn(1, 4), torch.zeros(1, dtype=torch.long), 2)
