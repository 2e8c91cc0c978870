"""Warnings about a training stage that finished but learned too little to be trusted.

A run on a user's own data can succeed and still produce a useless model: a pretraining loss
that stayed where a random encoder starts, a classifier at chance on its own training labels, a
student that does not agree with its teacher. Each check reads the stage's history (one record
per optimizer step) and returns plain sentences; the step logs them, counts them in its metrics
(simclrv2_stage_warnings) and writes them beside its model (warnings.json), and the evaluation
report shows them.
"""

import math

# Means over the last (and first) tenth of the run: one noisy step decides nothing.
_WINDOW_FRACTION = 0.1
# The loss must fall by at least this fraction of its start to count as learning.
MIN_LOSS_DROP = 0.05
# Training accuracy this close to chance (1 / classes) means the classifier learned nothing.
CHANCE_MARGIN = 0.05
# A student that agrees with its teacher on fewer of its own training images than this.
MIN_TEACHER_AGREEMENT = 0.5


def _window_mean(history: list[dict], key: str, last: bool) -> float | None:
    values = [record[key] for record in history if key in record]
    if not values:
        return None
    size = max(1, math.ceil(len(values) * _WINDOW_FRACTION))
    window = values[-size:] if last else values[:size]
    return sum(window) / len(window)


def contrastive_chance_loss(global_batch: int) -> float:
    """NT-Xent of an encoder that tells nothing apart: each view picks its positive among the
    2N - 1 other views with equal odds, and the loss sums both directions: 2 ln(2N - 1)."""
    return 2 * math.log(2 * global_batch - 1)


def contrastive_warnings(history: list[dict], global_batch: int) -> list[str]:
    """Pretraining: the NT-Xent loss must leave where it started (near chance)."""
    first, last = _window_mean(history, "loss", False), _window_mean(history, "loss", True)
    if first is None or len(history) < 2:
        return []
    if last > first * (1 - MIN_LOSS_DROP):
        chance = contrastive_chance_loss(global_batch)
        return [
            f"the contrastive loss hardly moved in {len(history)} steps ({first:.3f} -> "
            f"{last:.3f}; an encoder that tells nothing apart scores 2 ln(2N-1) = {chance:.3f} "
            f"at batch {global_batch}): the encoder learned little. Give pretraining more "
            "steps (pretrain.optimizer.min_steps or epochs) or check the learning rate"
        ]
    return []


def classifier_warnings(history: list[dict], num_classes: int, stage: str) -> list[str]:
    """Fine-tuning and the supervised baseline: training accuracy must leave chance."""
    last = _window_mean(history, "accuracy", True)
    chance = 1 / num_classes
    if last is not None and last <= chance + CHANCE_MARGIN:
        return [
            f"training accuracy at the end is {last:.1%}, at chance ({chance:.1%} with "
            f"{num_classes} classes): the classifier learned nothing. Give {stage} more steps "
            f"({stage}.optimizer.min_steps) or more labels"
        ]
    return []


def distillation_warnings(history: list[dict]) -> list[str]:
    """Distillation: the student should end up agreeing with its teacher on most images."""
    last = _window_mean(history, "teacher_agreement", True)
    if last is not None and last < MIN_TEACHER_AGREEMENT:
        return [
            f"the student agrees with its teacher on {last:.1%} of its training images at the "
            f"end (expected at least {MIN_TEACHER_AGREEMENT:.0%}): it will trail its teacher. "
            "Give distillation more steps (distill.optimizer.min_steps or epochs)"
        ]
    return []


def student_vs_teacher_warnings(models: dict, max_below_teacher: float) -> list[str]:
    """Evaluation: the student far below its teacher on the test split."""
    if "student" not in models or "teacher" not in models:
        return []
    student, teacher = models["student"]["top1"], models["teacher"]["top1"]
    if student < teacher - max_below_teacher:
        return [
            f"the student ({student:.2%} top-1) is {teacher - student:.2%} below its teacher "
            f"({teacher:.2%}), more than the {max_below_teacher:.2%} allowed "
            "(promotion.max_below_teacher): distillation fell short"
        ]
    return []
