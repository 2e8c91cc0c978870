"""Building blocks shared by the encoder and the heads, initialised as the reference does.

The reference (google-research/simclr tf2) uses TensorFlow defaults that differ from PyTorch's:
BN decay 0.9 (PyTorch momentum 0.1), epsilon 1e-5, convolutions initialised with
VarianceScaling (fan-in, truncated normal), dense layers with N(0, 0.01), and "SAME" pooling
that pads only at the end. These helpers keep those choices in one place.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_MOMENTUM = 0.1  # PyTorch's momentum is 1 - decay; the reference decay is 0.9.
BN_EPS = 1e-5

# Standard deviation of a unit normal truncated to [-2, 2]: TF divides by it so the
# truncated draw keeps the requested variance.
_TRUNCATED_NORMAL_STD = 0.87962566103423978


def batch_norm_2d(channels: int, zero_init: bool = False) -> nn.BatchNorm2d:
    """BatchNorm2d with the reference decay and epsilon; zero_init starts gamma at 0."""
    bn = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    if zero_init:
        nn.init.zeros_(bn.weight)
    return bn


def batch_norm_1d(features: int, center: bool = True) -> nn.BatchNorm1d:
    """BatchNorm1d; center=False drops beta, as the reference's last projection layer does."""
    bn = nn.BatchNorm1d(features, eps=BN_EPS, momentum=BN_MOMENTUM)
    if not center:
        # F.batch_norm accepts bias=None; removing the parameter keeps counts and optimiser
        # state identical to the reference (gamma only).
        del bn.bias
        bn.register_parameter("bias", None)
    return bn


def variance_scaling_init_(weight: torch.Tensor) -> torch.Tensor:
    """TF VarianceScaling(scale=1, mode='fan_in', distribution='truncated_normal')."""
    fan_in = weight[0].numel()
    std = math.sqrt(1.0 / fan_in) / _TRUNCATED_NORMAL_STD
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free convolution. Symmetric padding k//2 equals the reference's padding for odd
    kernels: SAME when stride is 1 and its explicit fixed padding when stride > 1."""
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=False,
    )
    variance_scaling_init_(conv.weight)
    return conv


def dense(in_features: int, out_features: int, bias: bool) -> nn.Linear:
    """Linear layer initialised with N(0, 0.01) as the reference's LinearLayer."""
    linear = nn.Linear(in_features, out_features, bias=bias)
    nn.init.normal_(linear.weight, std=0.01)
    if bias:
        nn.init.zeros_(linear.bias)
    return linear


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (begin, end) along one axis: the extra pixel goes at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameMaxPool2d(nn.Module):
    """3x3/2 max-pool with TF 'SAME' padding (PyTorch pads symmetrically, which shifts the
    windows by a pixel on even inputs and breaks weight compatibility with the reference)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = _same_padding(x.shape[-2], self.kernel_size, self.stride)
        left, right = _same_padding(x.shape[-1], self.kernel_size, self.stride)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class ShortcutAvgPool2d(nn.Module):
    """2x2 average pooling of the ResNet-D projection shortcut, exactly as the reference:
    stride > 1 pads one zero row/column at the end then pools VALID (padding counted);
    stride 1 is TF 'SAME' pooling, which averages only the pixels inside the image."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (0, 1, 0, 1))
        if self.stride > 1:
            return F.avg_pool2d(padded, 2, self.stride)
        ones = F.pad(torch.ones_like(x[:1, :1]), (0, 1, 0, 1))
        return F.avg_pool2d(padded, 2, 1) / F.avg_pool2d(ones, 2, 1)
