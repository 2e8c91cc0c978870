"""Global batch normalisation: batch statistics over all processes (the paper's "global BN").

With per-device BN, contrastive learning can "cheat": positives share a device, so BN
statistics leak which views belong together. On CUDA, torch.nn.SyncBatchNorm does this with
fused kernels; it refuses CPU tensors, so GlobalBatchNorm does the same on any device (gloo
on CPU) with differentiable all-reduces. `convert_to_global_batch_norm` picks between them.
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from simclrv2.distributed.gather import all_reduce_sum_with_grad, is_distributed


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm{1,2,3}d whose training statistics cover the global batch.

    Two-pass statistics (global mean, then global mean squared deviation) stay accurate when
    activations have a large mean; in eval mode or in a single process it is plain BatchNorm.
    """

    def __init__(self, *args, process_group: dist.ProcessGroup | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed(self.process_group)):
            return super().forward(x)
        self._check_input_dim(x)
        group = self.process_group
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        values = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], device=x.device)
        total = all_reduce_sum_with_grad(torch.cat([values.sum(dims), count]), group)
        count = total[-1]
        mean = total[:-1] / count
        centred = values - mean.view(shape)
        var = all_reduce_sum_with_grad(centred.square().sum(dims), group) / count
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count.item())
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            out = out * self.weight.view(shape)
        if self.bias is not None:
            out = out + self.bias.view(shape)
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / max(count - 1.0, 1.0)  # running_var is unbiased, as in torch
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def convert_to_global_batch_norm(
    module: nn.Module, process_group: dist.ProcessGroup | None = None
) -> nn.Module:
    """Replace every BatchNorm in `module` by its global version, keeping weights and stats.

    Parameters on CUDA get torch.nn.SyncBatchNorm, anything else GlobalBatchNorm. Call it
    after moving the model to its device and before wrapping it in DistributedDataParallel.
    """
    if isinstance(module, _BatchNorm) and not isinstance(
        module, nn.SyncBatchNorm | GlobalBatchNorm
    ):
        on_cuda = any(t.is_cuda for t in module.buffers())
        cls = nn.SyncBatchNorm if on_cuda else GlobalBatchNorm
        converted = cls(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            process_group=process_group,
        )
        if module.affine:
            with torch.no_grad():
                converted.weight = module.weight
                converted.bias = module.bias  # None where the reference has no beta
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_to_global_batch_norm(child, process_group))
    return module
