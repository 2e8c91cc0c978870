"""The training loop every training step shares: resume, epochs, checkpoints, metrics.

A step supplies its model, optimiser, a loader factory and a loss function; the loop:
- resumes from the newest checkpoint that every process can load and that passes its
  content check (simclrv2/distributed/agreed_checkpoint.py: damaged ones are skipped with a
  warning) - model, optimiser, schedule, history, RNG, epoch and batch position - and says so;
- builds the loader once, at the first epoch it runs, and iterates it once per epoch (its
  workers persist; every pass reseeds from (seed, rank, worker, epoch)); seeds each epoch
  from (seed, rank, epoch), so a resumed run replays the batches it had consumed and continues
  exactly where it stopped;
- checkpoints every `runtime.checkpoint_every_steps` steps and at the end (rank 0 writes,
  every rank waits);
- reports progress on the console and through Prometheus metrics;
- at the end, checks the result (check_health, simclrv2/training/stage_health.py) and logs
  and counts what it finds.
"""

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy
import torch
import torch.distributed as dist

from simclrv2.config.loading import to_dict
from simclrv2.config.run_config import RunConfig
from simclrv2.distributed.agreed_checkpoint import load_agreed_checkpoint
from simclrv2.distributed.context import DistributedContext
from simclrv2.steps.resume_check import check_same_run, load_error
from simclrv2.steps.training_setup import epoch_seed
from simclrv2.training.checkpoint import CheckpointStore, capture_rng_state, restore_rng_state
from simclrv2.training.deferred_records import DeferredRecords
from simclrv2.training.fault_injection import fail_on_first_attempt
from simclrv2.training.metrics import TrainingMetrics
from simclrv2.training.optimizer_step import optimizer_step
from simclrv2.training.progress import Progress

# loss_fn(batch) -> (loss to minimise, {metric name: value} to record, images in the batch);
# values may be 0-d tensors: they are read every log_every_steps, not at each step.
LossFn = Callable[[object], tuple[torch.Tensor, dict[str, float], int]]


@dataclass
class LoopResult:
    steps: int
    history: list[dict]
    resumed_from: str | None
    warnings: list[str]


def run_training_loop(
    name: str,
    config: RunConfig,
    context: DistributedContext,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    checkpoints: CheckpointStore,
    metrics: TrainingMetrics,
    epochs: int,
    steps_per_epoch: int,
    last_step: int,
    make_loader: Callable[[int, bool], Iterable],
    loss_fn: LossFn,
    say=print,
    after_step: Callable[[], None] | None = None,
    after_epoch: Callable[[int], dict[str, float]] | None = None,
    extra_state=None,
    check_health: Callable[[list[dict]], list[str]] | None = None,
) -> LoopResult:
    """Train until `last_step` (global steps; the budget's total for a full run), in passes of
    steps_per_epoch batches; the last pass is cut short where the steps end.

    make_loader(epoch, check): a re-iterable loader whose k-th pass is epoch + k (called once).

    after_step: called after every optimizer step (e.g. the momentum memory's update).
    after_epoch: epoch -> values to add to the epoch's last history record (e.g. the kNN
    monitor's knn_top1), called at the end of every whole epoch.
    extra_state: an object with state_dict/load_state_dict checkpointed with the model.
    check_health: history -> warnings about the result (none: no checks).
    """
    step, history, resumed_from, start, rng = 0, [], None, (0, 0), None
    latest, state = load_agreed_checkpoint(
        checkpoints, context, warn=lambda message: say(f"[{name}] WARNING: {message}")
    )
    if latest is not None:
        check_same_run(state.get("config"), to_dict(config), latest)
        try:
            getattr(model, "module", model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if extra_state is not None:
                extra_state.load_state_dict(state["extra"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise load_error(latest, error) from error
        step, history, resumed_from = state["step"], state["history"], latest
        rng = _this_ranks_rng(state, context, say, name)
        start = (state["epoch"], state["batch_in_epoch"])
        if start[1] >= steps_per_epoch:  # saved at the end of an epoch: start the next one
            start = (start[0] + 1, 0)
        say(f"[{name}] resuming from {latest}: step {step}, epoch {start[0]}, batch {start[1]}")

    started_at = step
    progress = Progress(name, last_step, config.runtime.log_every_steps, say, start_step=step)
    pending = DeferredRecords()  # this step's values, read every log_every_steps (no host sync)

    def report(records) -> None:
        for record, images in records:
            history.append(record)
            shown = {k: v for k, v in record.items() if k not in ("step", "epoch")}
            progress.update(record["step"], images, **shown)
            metrics.update(
                record["step"], record["epoch"], images=images, loss=record["loss"],
                learning_rate=record["learning_rate"],
                contrastive_accuracy=record.get("contrastive_accuracy"),
                accuracy=record.get("accuracy"),
                images_per_second=progress.images_per_second(),
                eta_seconds=progress.eta_seconds(record["step"]), total_steps=last_step,
            )  # fmt: skip

    model.train()
    loader = None
    with metrics:
        for epoch in range(start[0], epochs):
            if step >= last_step:
                break
            _seed_epoch(epoch_seed(config.runtime.seed, context.rank, epoch))
            if loader is None:  # built once: later epochs are its later passes
                loader = make_loader(epoch, True)
            batches = iter(loader)
            skip = start[1] if epoch == start[0] else 0
            for _ in range(skip):  # replay to the saved data position
                next(batches)
            if skip:
                restore_rng_state(rng)
            for index, batch in enumerate(batches, start=skip + 1):
                loss, values, images = loss_fn(batch)
                lr = optimizer_step(loss, optimizer, scheduler)
                if after_step is not None:
                    after_step()
                step += 1
                record = {"step": step, "epoch": epoch, "loss": loss, **values}
                record["learning_rate"] = lr
                pending.add(record, images * context.world_size)
                done = step >= last_step
                due_checkpoint = step % config.runtime.checkpoint_every_steps == 0
                # The run's last step ends its (possibly cut-short) last pass too, so the
                # after-epoch measurements see the final weights; a max_steps stop in an
                # earlier pass does not (a stopped run stays a prefix of the full one).
                epoch_ends = index == steps_per_epoch or (done and epoch == epochs - 1)
                if done or due_checkpoint or epoch_ends or step % progress.every == 0:
                    report(pending.read())
                if epoch_ends and after_epoch is not None:  # before the checkpoint saves it
                    measured = after_epoch(epoch)
                    history[-1].update(measured)
                    if measured:
                        metrics.update(step, epoch, images=0, **measured)
                if done or due_checkpoint:
                    state = {
                        "model": getattr(model, "module", model).state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "step": step,
                        "epoch": epoch,
                        "batch_in_epoch": index,
                        "rng": capture_rng_state(),
                        "rng_by_rank": _every_ranks_rng(context),
                        "history": history,
                        "config": to_dict(config),
                    }
                    if extra_state is not None:
                        state["extra"] = extra_state.state_dict()
                    _save(checkpoints, step, state, context)
                    inject_at = config.runtime.inject_failure_at_step
                    fail_on_first_attempt(name, step, started_at, inject_at)
                if done:
                    break
        report(pending.read())  # a loader that ran out before a report
        warnings = check_health(history) if check_health is not None else []
        for warning in warnings:
            say(f"[{name}] WARNING: {warning}")
        metrics.set_warnings(len(warnings))
    return LoopResult(step, history, resumed_from, warnings)


def _seed_epoch(seed: int) -> None:
    """Seed torch's, Python's and numpy's generators: the checkpoints hold all three, and an
    unseeded one (Python's differs in every process) would make the same run's checkpoints
    differ byte for byte."""
    torch.manual_seed(seed)
    random.seed(seed)
    numpy.random.seed(seed % 2**32)


def _every_ranks_rng(context) -> list:
    """Each rank's RNG state (rank order), so that every rank of a resumed multi-process run
    continues its own random stream, not rank 0's."""
    own = capture_rng_state()
    if not context.distributed:
        return [own]
    states = [None] * context.world_size
    dist.all_gather_object(states, own)
    return states


def _this_ranks_rng(state: dict, context, say, name: str) -> dict:
    by_rank = state.get("rng_by_rank") or [state["rng"]]
    if len(by_rank) == context.world_size:
        return by_rank[context.rank]
    say(f"[{name}] the checkpoint was written by {len(by_rank)} process(es), this run has "
        f"{context.world_size}: resuming with rank 0's random state (not bit-identical to an "
        "uninterrupted run)")  # fmt: skip
    return state["rng"]


def _save(checkpoints: CheckpointStore, step: int, state: dict, context) -> None:
    """Rank 0 writes; every rank waits, so none runs ahead of the last durable state."""
    if context.is_main:
        checkpoints.save(step, state)
    if context.distributed:
        dist.barrier()
