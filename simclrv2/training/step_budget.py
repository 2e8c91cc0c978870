"""How many optimizer steps a training stage runs, whatever the size of its data.

The reference recipes are stated in epochs of ImageNet (1.28 M images): 100 epochs at batch
4096 is 31,000 steps. The same epochs on a user's 4,000 images at batch 256 are 1,500 steps,
and one distillation epoch is 15 steps, too few to learn anything. A stage's budget is
therefore its epochs, raised to reach `optimizer.min_steps`, with its batch capped by the size
of its split; warmup is `optimizer.warmup_steps` when set, else `warmup_epochs` of the
(effective) epochs. Every change from the configured values comes with its reason, which the
step prints before its first batch.

Step counts follow the reference's formulas (tf2/model_util.py, get_train_steps and the
warmup of WarmUpAndCosineDecay): N x epochs // B + 1 steps in all and warmup_epochs x N // B
warmup steps, N counting every image (the reference's stream runs on across epoch
boundaries). Our loader makes fixed-length passes of N // B whole batches (so every process
gets the same count), so the run is as many passes as those steps need, the last one cut
short where the steps end.
"""

import math
from dataclasses import dataclass

from simclrv2.config.run_config import OptimizerSettings
from simclrv2.optim.lr_schedule import total_steps_for, warmup_steps_for


@dataclass(frozen=True)
class StepBudget:
    batch_size: int  # global, after capping
    steps_per_epoch: int  # whole batches in one pass over the data
    epochs: int  # passes over the data the steps need (the last may be cut short)
    warmup_steps: int
    reasons: tuple[str, ...]  # why a value differs from the configuration; empty if none
    total_steps: int

    @property
    def samples_per_epoch(self) -> int:
        """Images per (fixed-length) epoch over all processes: whole batches only."""
        return self.steps_per_epoch * self.batch_size

    def describe(self, name: str, samples: int) -> str:
        line = (
            f"[{name}] budget: {samples:,} images, global batch {self.batch_size}, "
            f"{self.total_steps:,} steps ({_count(self.epochs, 'pass', 'passes')} of "
            f"{_count(self.steps_per_epoch, 'step', 'steps')}), warmup {self.warmup_steps:,} steps"
        )
        return "\n".join([line, *(f"[{name}]   {reason}" for reason in self.reasons)])


def _count(number: int, one: str, many: str) -> str:
    return f"{number:,} {one if number == 1 else many}"


def plan_budget(
    name: str, samples: int, settings: OptimizerSettings, world_size: int = 1,
    section: str | None = None,
) -> StepBudget:  # fmt: skip
    """The stage's effective batch, epochs and warmup for `samples` training images.
    section: the run-config section of `settings` when it is not `name` (the supervised
    baseline trains with finetune's), for the messages."""
    if samples < world_size:
        raise ValueError(
            f"{name}: {samples} training images cannot be split over {world_size} processes; "
            "give the stage more images or fewer processes"
        )
    reasons = []
    batch = settings.batch_size
    if batch > samples:
        batch = samples - samples % world_size
        reasons.append(
            f"{samples:,} images are fewer than the batch of {settings.batch_size}: "
            f"batch {batch} (the learning rate scales with it)"
        )
    steps_per_epoch = samples // batch
    configured = total_steps_for(settings.epochs, samples, batch)
    total = configured
    if configured < settings.min_steps:
        total = settings.min_steps
        reasons.append(
            f"{samples:,} images: {settings.epochs:g} epoch(s) = {configured:,} steps < "
            f"minimum {settings.min_steps:,} ({section or name}.optimizer.min_steps), "
            f"running {total:,} steps"
        )
    if settings.warmup_steps:
        warmup = min(settings.warmup_steps, total)
    elif total != configured:
        # Warmup keeps its share of the run when the steps were raised: 0.1 of 1 epoch stays
        # 10% of the run, not 0.3% of 34 epochs.
        warmup = round(settings.warmup_epochs / settings.epochs * total)
    else:
        warmup = warmup_steps_for(settings.warmup_epochs, samples, batch)
    passes = math.ceil(total / steps_per_epoch)
    return StepBudget(batch, steps_per_epoch, passes, warmup, tuple(reasons), total)
