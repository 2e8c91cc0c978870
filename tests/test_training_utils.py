"""Progress reporting and the evaluation metrics used by the training loops."""

import pytest
import torch

from simclrv2.training.classifier_training import confusion_matrix, top_k_accuracy
from simclrv2.training.progress import Progress, format_duration


def test_progress_reports_every_n_steps_and_the_last_with_throughput_and_eta():
    lines = []
    progress = Progress("pretrain", total_steps=5, every=2, print_fn=lines.append)
    for step in range(1, 6):
        progress.update(step, images=10, loss=1.5)
    assert [line.split()[2] for line in lines] == ["2/5", "4/5", "5/5"]
    assert lines[0].startswith("[pretrain] step 2/5 loss 1.5 | ")
    assert "img/s" in lines[0] and lines[-1].endswith("ETA 00:00")
    assert progress.images == 50


def test_format_duration():
    assert format_duration(75) == "01:15"
    assert format_duration(3 * 3600 + 61) == "3:01:01"


def test_confusion_matrix_rows_are_true_classes():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    predictions = torch.tensor([0, 1, 1, 2, 0, 2])
    matrix = confusion_matrix(predictions, labels, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_top_k_accuracy():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([2, 0, 0])
    assert top_k_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(logits, labels, 10) == 1.0
