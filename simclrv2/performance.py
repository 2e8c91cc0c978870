"""Device choice and the speed switches: channels_last memory format and bf16 autocast.

Both work on CPU and GPU. channels_last + bf16 is ~3x faster than fp32 on this project's
AVX-512-bf16 build machine (benchmarks/train_step_throughput.py) and is the usual setting on
A100/H100. Losses and BN statistics stay in fp32 (autocast keeps them there).
"""

import contextlib

import torch
from torch import nn


def select_device(requested: str = "auto") -> torch.device:
    """'auto' -> cuda when present, else cpu; anything else is taken as a torch device string."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} was requested but CUDA is not available here")
    return device


def cpu_computes_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 / AMX). Elsewhere (AVX2: most
    laptops) bf16 is emulated and slower than fp32. Follows ONEDNN_MAX_CPU_ISA."""
    try:  # a private PyTorch check; its absence means "no"
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def prepare_images(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the model's device (no loss scaling needed, unlike fp16)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
