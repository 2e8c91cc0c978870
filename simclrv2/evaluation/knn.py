"""Weighted k-nearest-neighbour classification of frozen features.

The monitor the self-supervised literature reports during pretraining (Wu et al. 2018,
"Unsupervised Feature Learning via Non-Parametric Instance Discrimination", and the kNN
monitors of solo-learn and lightly): features are L2-normalised; each test image takes its k
most similar training images by cosine similarity s, each votes for its label with weight
exp(s / T); the class with the most weight wins. k = 200 and T = 0.1 are the usual settings.
"""

import torch
import torch.nn.functional as F


def weighted_knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Predicted labels (M,) of test_features (M, D) from train_features (N, D)."""
    if len(train_features) == 0:
        raise ValueError("kNN needs at least one training feature")
    if k < 1 or temperature <= 0:
        raise ValueError(f"kNN needs k >= 1 and temperature > 0, got k={k}, T={temperature}")
    train = F.normalize(train_features.float(), dim=1)
    k = min(k, len(train))
    predictions = []
    for start in range(0, len(test_features), chunk):
        test = F.normalize(test_features[start : start + chunk].float(), dim=1)
        similarity, index = (test @ train.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(len(test), num_classes, device=test.device)
        votes.scatter_add_(1, train_labels[index], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)


def knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes,
                 k: int = 200, temperature: float = 0.1) -> float:  # fmt: skip
    """Top-1 accuracy of the weighted kNN classifier, 0 to 1."""
    predicted = weighted_knn_predict(
        train_features, train_labels, test_features, num_classes, k, temperature
    )
    return (predicted == test_labels.to(predicted.device)).float().mean().item()
