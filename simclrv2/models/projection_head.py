"""The projection head g(.) of SimCLRv2: a deeper MLP than SimCLRv1's (3 layers by default).

Every layer is Linear (no bias: the BN that follows has the shift) + BN; hidden layers are as
wide as the encoder output and end with ReLU; the last layer maps to `out_dim` with BN that has
no beta and no ReLU. Fine-tuning starts from the output of layer k (k=0: the encoder output),
so `forward` can return every intermediate representation.
"""

import torch
import torch.nn.functional as F
from torch import nn

from simclrv2.models.layers import batch_norm_1d, dense


class ProjectionLayer(nn.Module):
    """Linear + BN (+ ReLU for hidden layers)."""

    def __init__(self, in_features: int, out_features: int, last: bool):
        super().__init__()
        self.linear = dense(in_features, out_features, bias=False)
        self.bn = batch_norm_1d(out_features, center=not last)
        self.relu = not last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.linear(x))
        return F.relu(x) if self.relu else x


class ProjectionHead(nn.Module):
    def __init__(self, in_features: int, num_layers: int = 3, out_dim: int = 128):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"the projection head needs at least 1 layer, got {num_layers}")
        self.layers = nn.ModuleList(
            ProjectionLayer(
                in_features,
                out_dim if j == num_layers - 1 else in_features,
                last=j == num_layers - 1,
            )
            for j in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[input, after layer 1, ..., after layer N]: index k is what fine-tuning from k uses."""
        states = [x]
        for layer in self.layers:
            states.append(layer(states[-1]))
        return states
