"""The SimCLRv2 encoder: ResNet-18..200 with width multiplier and Selective Kernels.

Follows the reference (google-research/simclr tf2/resnet.py), post-activation ResNet v1.5
(stride on the 3x3 convolution):
- with sk_ratio > 0 the 3x3 convolutions of bottleneck blocks become SK convolutions, the stem
  is ResNet-D style (three 3x3 convolutions) and projection shortcuts average-pool before
  their 1x1 convolution;
- the last BN of every residual branch starts with gamma = 0;
- the first block of every stage has a projection shortcut, as in the reference (ResNet-18/34
  therefore carry one more 1x1 convolution than torchvision's);
- cifar_stem (for images of 32 px or less): one 3x3 stride-1 convolution, no max-pool.
The output is the globally average-pooled feature vector (no classifier).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from simclrv2.models.layers import (
    SameMaxPool2d,
    ShortcutAvgPool2d,
    batch_norm_2d,
    conv2d,
)
from simclrv2.models.selective_kernel import SelectiveKernelConv2d

STAGE_BLOCKS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


@dataclass(frozen=True)
class EncoderConfig:
    """Everything that defines the encoder's architecture (saved with every checkpoint)."""

    depth: int = 50
    width_multiplier: float = 1.0
    sk_ratio: float = 0.0
    cifar_stem: bool = False
    in_channels: int = 3

    def __post_init__(self):
        if self.depth not in STAGE_BLOCKS:
            raise ValueError(
                f"ResNet depth {self.depth} is not supported; choose one of {sorted(STAGE_BLOCKS)}"
            )
        base = 64 * self.width_multiplier
        if self.width_multiplier <= 0 or base != int(base) or (self.sk_ratio > 0 and base % 2):
            raise ValueError(
                f"width_multiplier {self.width_multiplier} must be positive and make 64 * width "
                "a whole number of channels (even with SK); e.g. 0.25, 0.5, 1, 2, 3"
            )
        if not 0.0 <= self.sk_ratio < 1.0:
            raise ValueError(f"sk_ratio {self.sk_ratio} must be in [0, 1); the paper uses 0.0625")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")


def _projection_shortcut(
    in_channels: int, out_channels: int, stride: int, resnet_d: bool
) -> nn.Sequential:
    if resnet_d:  # ResNet-D: pool first, so the 1x1 convolution sees every pixel.
        layers = [ShortcutAvgPool2d(stride), conv2d(in_channels, out_channels, 1)]
    else:
        layers = [conv2d(in_channels, out_channels, 1, stride)]
    return nn.Sequential(*layers, batch_norm_2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34). The reference uses no SK convolution here."""

    expansion = 1

    def __init__(
        self, in_channels: int, filters: int, stride: int, projection: bool, sk_ratio: float
    ):
        super().__init__()
        self.shortcut = (
            _projection_shortcut(in_channels, filters, stride, resnet_d=sk_ratio > 0)
            if projection
            else nn.Identity()
        )
        self.conv1 = conv2d(in_channels, filters, 3, stride)
        self.bn1 = batch_norm_2d(filters)
        self.conv2 = conv2d(filters, filters, 3)
        self.bn2 = batch_norm_2d(filters, zero_init=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (or SK) -> 1x1 with 4x expansion (ResNet-50 and deeper)."""

    expansion = 4

    def __init__(
        self, in_channels: int, filters: int, stride: int, projection: bool, sk_ratio: float
    ):
        super().__init__()
        out_channels = 4 * filters
        self.shortcut = (
            _projection_shortcut(in_channels, out_channels, stride, resnet_d=sk_ratio > 0)
            if projection
            else nn.Identity()
        )
        self.conv1 = conv2d(in_channels, filters, 1)
        self.bn1 = batch_norm_2d(filters)
        if sk_ratio > 0:
            self.conv2 = SelectiveKernelConv2d(filters, filters, stride, sk_ratio)
        else:
            self.conv2 = nn.Sequential(
                conv2d(filters, filters, 3, stride), batch_norm_2d(filters), nn.ReLU()
            )
        self.conv3 = conv2d(filters, out_channels, 1)
        self.bn3 = batch_norm_2d(out_channels, zero_init=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _stem(config: EncoderConfig) -> nn.Sequential:
    width = int(64 * config.width_multiplier)
    if config.cifar_stem:
        return nn.Sequential(conv2d(config.in_channels, width, 3), batch_norm_2d(width), nn.ReLU())
    if config.sk_ratio > 0:  # ResNet-D stem: three 3x3 convolutions instead of one 7x7.
        convs = [
            conv2d(config.in_channels, width // 2, 3, 2),
            batch_norm_2d(width // 2),
            nn.ReLU(),
            conv2d(width // 2, width // 2, 3),
            batch_norm_2d(width // 2),
            nn.ReLU(),
            conv2d(width // 2, width, 3),
        ]
    else:
        convs = [conv2d(config.in_channels, width, 7, 2)]
    return nn.Sequential(*convs, batch_norm_2d(width), nn.ReLU(), SameMaxPool2d(3, 2))


class ResNet(nn.Module):
    """Encoder f(.): images (N, C, H, W) in [0, 1] -> features (N, output_dim)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        kind, blocks_per_stage = STAGE_BLOCKS[config.depth]
        block = BasicBlock if kind == "basic" else BottleneckBlock
        self.stem = _stem(config)
        channels = int(64 * config.width_multiplier)
        stages = []
        for stage, num_blocks in enumerate(blocks_per_stage):
            filters = int(64 * 2**stage * config.width_multiplier)
            blocks = []
            for index in range(num_blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(block(channels, filters, stride, index == 0, config.sk_ratio))
                channels = filters * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.output_dim = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))
