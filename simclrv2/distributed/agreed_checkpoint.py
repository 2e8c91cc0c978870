"""Which checkpoint a (re)started training step resumes from, agreed by every process.

The newest checkpoint is not always usable: it can be truncated or changed after it was
written (its content no longer matches its digest), or missing or damaged for one process
only (a node that sees another copy of the folder). Every process
must resume from the same one, or DDP desynchronises. So rank 0 lists the sealed
checkpoints once and sends the list to every rank (ranks on different nodes list S3 at
different moments); then, newest first, every rank loads and checks the candidate, and the
first one that every rank loaded is the one; each skipped one is reported with the reason
and the rank that refused it, and unsealed (simclrv2/training/checkpoint.py) so that the run
can save that step again. No usable checkpoint: the step starts from the beginning.
"""

from collections.abc import Callable

import torch.distributed as dist

from simclrv2.distributed.context import DistributedContext
from simclrv2.storage.errors import ObjectNotFound
from simclrv2.training.checkpoint import CheckpointError, CheckpointStore


def load_agreed_checkpoint(
    checkpoints: CheckpointStore,
    context: DistributedContext,
    warn: Callable[[str], None],
) -> tuple[str | None, dict | None]:
    """(URI, state) of the newest checkpoint every rank could load, or (None, None).

    warn(message) is called on every rank with the same messages (one per skipped
    checkpoint, and one about checkpoint files without a digest newer than the chosen one).
    """
    candidates = [checkpoints.steps() if context.is_main else None]
    if context.distributed:
        dist.broadcast_object_list(candidates, src=0)
    chosen_step, chosen, skipped = None, (None, None), []
    for step in reversed(candidates[0]):
        uri = checkpoints.uri_for_step(step)
        state, problem = None, None
        try:
            state = checkpoints.load(uri)
        except (CheckpointError, ObjectNotFound) as error:  # damaged or gone: an older one
            problem = str(error)
        # Any other storage error (an outage past its budget) fails the attempt: a retry
        # finds the checkpoint again, where skipping it would throw its steps away.
        problems = _every_ranks(problem, context)
        refused = {rank: found for rank, found in enumerate(problems) if found is not None}
        if not refused:
            chosen_step, chosen = step, (uri, state)
            break
        del state  # an older one follows: one checkpoint in memory at a time
        for rank, found in refused.items():
            by = f"rank {rank}: " if context.distributed else ""
            warn(f"skipping checkpoint {uri} ({by}{found}); trying the one before it")
        skipped.append(step)
        if context.is_main:
            checkpoints.unseal(step)
    _warn_about_unsealed(checkpoints, chosen_step, skipped, context, warn)
    if chosen_step is None and candidates[0]:
        warn(f"no checkpoint in {checkpoints.directory} could be used: starting from step 0")
    return chosen


def _every_ranks(value, context: DistributedContext) -> list:
    """[value of rank 0, rank 1, ...] on every rank."""
    if not context.distributed:
        return [value]
    values = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def _warn_about_unsealed(checkpoints, chosen_step, skipped, context, warn) -> None:
    """Checkpoint files newer than the chosen one that have no digest (other than those
    just skipped): say they are ignored (the same message on every rank)."""
    found = [checkpoints.unsealed_steps() if context.is_main else None]
    if context.distributed:
        dist.broadcast_object_list(found, src=0)
    newer = [
        step
        for step in found[0]
        if (chosen_step is None or step > chosen_step) and step not in skipped
    ]
    if newer:
        names = ", ".join(checkpoints.uri_for_step(step) for step in newer)
        warn(
            f"ignored {names}: no digest (.sha256) beside it, so it was not written "
            "completely by this version of simclrv2 (or was found damaged before)"
        )
