"""Weighted kNN (the pretraining monitor) against a plain loop, and on data with a known answer."""

import math

import pytest
import torch

from simclrv2.evaluation.knn import knn_accuracy, weighted_knn_predict


def loop_knn(train, labels, test, classes, k, temperature):
    """Independent reference: one query at a time, plain Python sorting."""
    train = [t / t.norm() for t in train]
    predictions = []
    for query in test:
        query = query / query.norm()
        similarities = sorted(((float(query @ t), int(y)) for t, y in zip(train, labels,
                                                                          strict=True)),
                              reverse=True)[:k]  # fmt: skip
        votes = [0.0] * classes
        for similarity, label in similarities:
            votes[label] += math.exp(similarity / temperature)
        predictions.append(max(range(classes), key=votes.__getitem__))
    return torch.tensor(predictions)


@pytest.mark.parametrize("k,temperature", [(1, 0.1), (5, 0.1), (200, 0.1), (7, 1.0)])
def test_equals_a_plain_loop(k, temperature):
    torch.manual_seed(0)
    train, labels = torch.randn(60, 8), torch.randint(0, 4, (60,))
    test = torch.randn(25, 8)
    got = weighted_knn_predict(train, labels, test, 4, k, temperature, chunk=7)
    assert torch.equal(got, loop_knn(train, labels, test, 4, k, temperature))


def test_separable_features_are_classified_and_random_labels_are_not():
    torch.manual_seed(1)
    centres = torch.randn(5, 16) * 5
    labels = torch.arange(5).repeat_interleave(40)
    train = centres[labels] + torch.randn(200, 16) * 0.3
    test_labels = torch.arange(5).repeat_interleave(20)
    test = centres[test_labels] + torch.randn(100, 16) * 0.3
    assert knn_accuracy(train, labels, test, test_labels, 5) == 1.0
    shuffled = labels[torch.randperm(200)]
    assert knn_accuracy(train, shuffled, test, test_labels, 5, k=200) < 0.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one"):
        weighted_knn_predict(torch.empty(0, 4), torch.empty(0, dtype=torch.long),
                             torch.randn(2, 4), 3)  # fmt: skip
    with pytest.raises(ValueError, match="k >= 1"):
        weighted_knn_predict(torch.randn(3, 4), torch.zeros(3, dtype=torch.long),
                             torch.randn(2, 4), 3, k=0)  # fmt: skip
