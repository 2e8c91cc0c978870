"""Distillation loss of SimCLRv2 (paper eq. 2), with an optional labeled term.

L = -sum_i sum_y P_T(y|x_i; tau) log P_S(y|x_i; tau), P(y|x; tau) = softmax(f(x) / tau),
averaged over the batch; the teacher is fixed. With labels and alpha > 0:
L = (1 - alpha) * L_distill + alpha * CE(student logits, labels)  (paper's default: alpha = 0).

On tau^2: Hinton et al. multiply the soft loss by tau^2 so that its gradients keep the same
size when tau changes. The SimCLRv2 paper's loss has no such factor and its tau (0.1 for
self-distillation, 1.0 for big-to-small) was tuned without it, so the default here is no
factor (`temperature_squared=False`). At tau = 1 both are the same; set it to True only when
mixing in labels at a high tau, where the soft term would otherwise be too weak.
"""

import torch
import torch.nn.functional as F


def teacher_probabilities(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """P_T(y|x; tau): what pseudo-labelling stores so distillation never reruns the teacher."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return F.softmax(teacher_logits.float() / temperature, dim=-1)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    temperature: float,
    labels: torch.Tensor | None = None,
    alpha: float = 0.0,
    temperature_squared: bool = False,
) -> torch.Tensor:
    """Soft cross-entropy of the student against the teacher's tempered probabilities."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (weight of the labeled loss) must be in [0, 1], got {alpha}")
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher probabilities "
            f"{tuple(teacher_probs.shape)} must have the same shape (same classes)"
        )
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    loss = -(teacher_probs.float() * log_student).sum(dim=-1).mean()
    if temperature_squared:
        loss = loss * temperature**2
    if alpha > 0:
        if labels is None:
            raise ValueError("alpha > 0 mixes in the labeled loss, so labels are required")
        loss = (1 - alpha) * loss + alpha * F.cross_entropy(student_logits.float(), labels)
    return loss
