"""Linear evaluation: a linear classifier trained on frozen features (the paper's protocol for
representation quality; here on the labeled split, tested on the test split).

The features are computed once (centre crop, encoder in eval mode), standardised with the
training features' mean and spread, and a multinomial logistic regression is fitted by
full-batch L-BFGS. Its L2 weight decay is chosen from a grid by accuracy on a held-out fifth of
the training features (never on the test split), then the classifier is refitted on all of
them. Cheap enough to run inside the evaluate step: seconds for thousands of features.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass(frozen=True)
class LinearProbe:
    weight: torch.Tensor  # (classes, D), on standardised features
    bias: torch.Tensor
    mean: torch.Tensor
    scale: torch.Tensor
    weight_decay: float
    validation_accuracy: float

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.float() - self.mean) / self.scale
        return (x @ self.weight.T + self.bias).argmax(dim=1)

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return (self.predict(features) == labels.to(features.device)).float().mean().item()


def _fit(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float, steps: int):
    weight = torch.zeros(classes, x.shape[1], device=x.device, requires_grad=True)
    bias = torch.zeros(classes, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps,
                                  line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + weight_decay * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def fit_linear_probe(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int,
    weight_decays=WEIGHT_DECAYS, steps: int = 200, seed: int = 0,
) -> LinearProbe:  # fmt: skip
    """Choose the weight decay on a held-out fifth of (features, labels), refit on all."""
    if len(features) < 2:
        raise ValueError(f"linear evaluation needs at least 2 labeled images, got {len(features)}")
    features, labels = features.float(), labels.to(features.device)
    mean = features.mean(dim=0)
    scale = features.std(dim=0).clamp(min=1e-6)
    x = (features - mean) / scale
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    held = order[: max(1, len(x) // 5)].to(x.device)
    kept = order[max(1, len(x) // 5) :].to(x.device)
    scores = {}
    for decay in weight_decays:
        weight, bias = _fit(x[kept], labels[kept], num_classes, decay, steps)
        predicted = (x[held] @ weight.T + bias).argmax(dim=1)
        scores[decay] = (predicted == labels[held]).float().mean().item()
    best = max(weight_decays, key=lambda decay: (scores[decay], decay))  # ties: more decay
    weight, bias = _fit(x, labels, num_classes, best, steps)
    return LinearProbe(weight, bias, mean, scale, best, scores[best])
