"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

As the reference (tf2/objective.py): 2N views, view a of image i is positive for view b of
image i; the negatives are the 2N-2 other views of the global batch (gathered from every
process with gradients). Both directions (a->b and b->a) are summed and averaged over the local
images, so with data-parallel gradient averaging the optimised loss is the loss of the global
batch.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from simclrv2.distributed.gather import all_gather_with_grad, world_rank_and_size

# Removes the similarity of a view with itself from the softmax (the reference's LARGE_NUM).
_SELF_SIMILARITY_PENALTY = 1e9


def nt_xent_loss(
    projections: torch.Tensor,
    temperature: float,
    normalize: bool = True,
    group: dist.ProcessGroup | None = None,
    extra_negatives: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contrastive loss and contrastive top-1 accuracy.

    projections: (2N, D): rows [0, N) are the first views and rows [N, 2N) the second views
    of the same N images, in the same order.
    extra_negatives: (K, D) L2-normalised vectors added as negatives for every anchor (the
    momentum memory's queue); none or an empty tensor gives plain NT-Xent.
    Returns (loss, accuracy): accuracy is the fraction of first views whose most similar
    second view (among the global batch) is their own positive, as the reference reports.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if projections.dim() != 2 or projections.shape[0] % 2:
        raise ValueError(
            f"projections must be (2N, D) with both views stacked, got {tuple(projections.shape)}"
        )
    # Similarities and loss in at least fp32, with autocast off: under bf16 autocast the
    # matmuls below would run in bf16 (logits / 0.1 then lose about 1 % of the loss and 2 %
    # of its gradient), whatever dtype their inputs have.
    with torch.autocast(projections.device.type, enabled=False):
        return _nt_xent(projections, temperature, normalize, group, extra_negatives)


def _nt_xent(projections, temperature, normalize, group, extra_negatives):
    hidden = projections.to(torch.promote_types(projections.dtype, torch.float32))
    if normalize:
        hidden = F.normalize(hidden, dim=1)
    hidden_a, hidden_b = hidden.chunk(2)
    batch = hidden_a.shape[0]
    rank, _ = world_rank_and_size(group)
    all_a = all_gather_with_grad(hidden_a, group)
    all_b = all_gather_with_grad(hidden_b, group)

    labels = torch.arange(batch, device=hidden.device) + rank * batch
    self_mask = F.one_hot(labels, all_a.shape[0]).to(hidden.dtype) * _SELF_SIMILARITY_PENALTY
    logits_aa = hidden_a @ all_a.T / temperature - self_mask
    logits_bb = hidden_b @ all_b.T / temperature - self_mask
    logits_ab = hidden_a @ all_b.T / temperature
    logits_ba = hidden_b @ all_a.T / temperature

    candidates_a, candidates_b = [logits_ab, logits_aa], [logits_ba, logits_bb]
    if extra_negatives is not None and len(extra_negatives):
        extra = extra_negatives.to(hidden.dtype).detach()
        candidates_a.append(hidden_a @ extra.T / temperature)
        candidates_b.append(hidden_b @ extra.T / temperature)
    loss_a = F.cross_entropy(torch.cat(candidates_a, dim=1), labels, reduction="none")
    loss_b = F.cross_entropy(torch.cat(candidates_b, dim=1), labels, reduction="none")
    loss = (loss_a + loss_b).mean()
    accuracy = (logits_ab.argmax(dim=1) == labels).float().mean()
    return loss, accuracy.detach()
