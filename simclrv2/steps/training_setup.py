"""Pieces every training step shares: optimiser + schedule from settings, model placement
(device, channels_last, global BN, DDP), precision default and per-epoch seeds."""

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from simclrv2.config.run_config import OptimizerSettings, RuntimeSettings
from simclrv2.distributed.context import DistributedContext
from simclrv2.distributed.global_batch_norm import convert_to_global_batch_norm
from simclrv2.optim.lars import LARS, lars_param_groups
from simclrv2.optim.lr_schedule import scale_learning_rate, warmup_cosine_scheduler
from simclrv2.performance import cpu_computes_bf16, prepare_model
from simclrv2.training.step_budget import StepBudget


def bf16_enabled(runtime: RuntimeSettings, device: torch.device) -> bool:
    """runtime.bf16, or where unset: on when the hardware computes bf16 natively."""
    if runtime.bf16 is not None:
        return runtime.bf16
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_computes_bf16()


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """A stable seed per (run seed, rank, epoch): resumed runs redraw the same randomness."""
    return hash((seed, rank, epoch)) % 2**62


def per_rank_batch(batch_size: int, context: DistributedContext) -> int:
    check_batch_divides(batch_size, context.world_size, "optimizer")
    return batch_size // context.world_size


def check_batch_divides(batch_size: int, world_size: int, section: str) -> None:
    """ValueError, with the nearest sizes that work, unless every process gets equal shares."""
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        raise ValueError(
            f"{section}.batch_size {batch_size} (global) does not divide evenly over "
            f"{world_size} processes: set it to a multiple of {world_size}, e.g. "
            f"{lower or world_size} or {lower + world_size}"
        )


def place_model(
    model: nn.Module, context: DistributedContext, runtime: RuntimeSettings
) -> nn.Module:
    """Device and memory format, then global BN and DDP when several processes train, then
    torch.compile when runtime.compile is set."""
    model = prepare_model(model, context.device, runtime.channels_last)
    if context.distributed:
        if runtime.global_bn:
            model = convert_to_global_batch_norm(model)
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        # Gradients as views into DDP's buckets: no copy into the buckets, less memory.
        model = DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)
    if runtime.compile:
        # In place (nn.Module.compile): state_dict keys stay those of the plain model, so
        # checkpoints and model artifacts are the same with and without compiling.
        model.compile()
    return model


def make_optimizer(
    model: nn.Module,
    settings: OptimizerSettings,
    budget: StepBudget,
    classifier_prefixes=(),
    algorithm: str = "lars",
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, int]:
    """The optimizer and its warmup + cosine schedule over the budget; returns total steps.
    lars: LARS with the reference's parameter groups (pretrain, fine-tune, distill).
    sgd: SGD with Nesterov momentum, weight decay on every parameter (training from scratch,
    the supervised baseline). The peak rate scales with the budget's (possibly capped) batch."""
    module = getattr(model, "module", model)
    lr = scale_learning_rate(
        settings.base_learning_rate, budget.batch_size, settings.learning_rate_scaling
    )
    if algorithm == "sgd":
        optimizer = torch.optim.SGD(
            module.parameters(), lr=lr, momentum=settings.momentum, nesterov=True,
            weight_decay=settings.weight_decay,
        )  # fmt: skip
    elif algorithm == "lars":
        groups = lars_param_groups(module, settings.weight_decay, classifier_prefixes)
        optimizer = LARS(groups, lr=lr, momentum=settings.momentum,
                         eeta=settings.trust_coefficient)  # fmt: skip
    else:
        raise ValueError(f"unknown optimizer algorithm {algorithm!r}: lars or sgd")
    scheduler = warmup_cosine_scheduler(optimizer, lr, budget.warmup_steps, budget.total_steps)
    return optimizer, scheduler, budget.total_steps
