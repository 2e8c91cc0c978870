"""Selective Kernel convolution (SKNet, arXiv 1903.06586) as SimCLRv2's reference builds it.

The reference does not use a separate dilated branch: one 3x3 convolution produces twice the
channels, split into two streams that a small attention MLP mixes per channel (softmax over
the streams). This is what the published parameter counts (R152-3x+SK: 795M) correspond to.
"""

import torch
import torch.nn.functional as F
from torch import nn

from simclrv2.models.layers import batch_norm_2d, conv2d, variance_scaling_init_


class SelectiveKernelConv2d(nn.Module):
    """3x3 SK convolution with its batch norms and ReLU (it replaces conv + BN + ReLU)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, sk_ratio: float, min_dim: int = 32
    ):
        super().__init__()
        self.out_channels = out_channels
        self.conv = conv2d(in_channels, 2 * out_channels, 3, stride)
        self.bn = batch_norm_2d(2 * out_channels)
        mid_dim = max(int(out_channels * sk_ratio), min_dim)
        self.attention_reduce = nn.Conv2d(out_channels, mid_dim, 1, bias=False)
        self.attention_bn = batch_norm_2d(mid_dim)
        self.attention_expand = nn.Conv2d(mid_dim, 2 * out_channels, 1, bias=False)
        variance_scaling_init_(self.attention_reduce.weight)
        variance_scaling_init_(self.attention_expand.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        streams = F.relu(self.bn(self.conv(x)))
        streams = streams.unflatten(1, (2, self.out_channels))  # (N, 2, C, H, W)
        context = streams.sum(dim=1).mean(dim=(2, 3), keepdim=True)
        attention = self.attention_expand(F.relu(self.attention_bn(self.attention_reduce(context))))
        attention = attention.unflatten(1, (2, self.out_channels)).softmax(dim=1)
        return (streams * attention).sum(dim=1)
