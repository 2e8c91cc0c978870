"""Parameter counts without allocating weights (an R152-3x+SK needs 3 GB in fp32)."""

import torch
from torch import nn

from simclrv2.models.resnet import EncoderConfig, ResNet


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def encoder_parameter_count(config: EncoderConfig) -> int:
    """Backbone parameters (the paper's "params" column), built on the meta device."""
    with torch.device("meta"):
        return count_parameters(ResNet(config))
