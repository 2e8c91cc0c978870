"""Cross-process gathering that keeps autograd, for negatives from every replica.

torch.distributed.all_gather is not differentiable, so the loss would not push gradients into
the embeddings other ranks computed: each rank would then only learn from its own positives,
the classic "loss stuck at ln(2N) in multi-node runs" bug. Here the backward pass sums the
gradient every rank computed for the gathered tensor and hands each rank its own slice, which
works on every backend (gloo has no reduce_scatter).
"""

import torch
import torch.distributed as dist


def is_distributed(group: dist.ProcessGroup | None = None) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_rank_and_size(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    if is_distributed(group):
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.rows = tensor.shape[0]
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, tensor, group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        # Every rank's loss depends on our rows: their gradients add up.
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows], None


def all_gather_with_grad(
    tensor: torch.Tensor, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """Concatenate `tensor` from all ranks along dim 0 (rank order); gradients flow back.

    Every rank must pass the same shape (use drop_last batches). Without a process group of
    more than one rank this returns `tensor` itself.
    """
    if not is_distributed(group):
        return tensor
    return _AllGatherWithGrad.apply(tensor, group)


class _AllReduceSumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        ctx.group = group
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # d(sum over ranks)/d(our input) is the sum of every rank's upstream gradient.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_reduce_sum_with_grad(
    tensor: torch.Tensor, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """Sum of `tensor` over all ranks; gradients flow back to every rank's input."""
    if not is_distributed(group):
        return tensor
    return _AllReduceSumWithGrad.apply(tensor, group)
