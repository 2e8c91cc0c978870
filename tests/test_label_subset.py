import pytest
import torch

from simclrv2.datasets.label_subset import balanced_subset


def _labels():
    return torch.arange(10).repeat_interleave(100)[torch.randperm(1000)]


def test_fraction_gives_equal_counts_per_class_and_is_reproducible():
    labels = _labels()
    subset = balanced_subset(labels, fraction=0.1, seed=7)
    assert len(subset) == 100
    assert torch.bincount(labels[subset]).tolist() == [10] * 10
    assert torch.equal(subset, balanced_subset(labels, fraction=0.1, seed=7))
    assert not torch.equal(subset, balanced_subset(labels, fraction=0.1, seed=8))
    assert len(set(subset.tolist())) == 100


def test_per_class_and_errors():
    labels = _labels()
    assert len(balanced_subset(labels, per_class=3)) == 30
    with pytest.raises(ValueError, match="exactly one"):
        balanced_subset(labels)
    with pytest.raises(ValueError, match="fewer than"):
        balanced_subset(labels, per_class=101)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        balanced_subset(labels, fraction=1.5)


def test_fraction_one_is_every_image_even_when_classes_differ_in_size():
    # MNIST's classes hold 5,421 to 6,742 images: "100 % of the labels" must not ask every
    # class for the mean count (the label-efficiency ceiling failed so).
    labels = torch.cat([torch.zeros(7, dtype=torch.long), torch.ones(3, dtype=torch.long)])
    assert balanced_subset(labels, fraction=1.0).tolist() == list(range(10))
    with pytest.raises(ValueError, match=r"at most 3 per class, a fraction of at most 0\.6,"):
        balanced_subset(labels, fraction=0.9)
    # The fraction the message offers works.
    assert torch.bincount(labels[balanced_subset(labels, fraction=0.6)]).tolist() == [3, 3]
