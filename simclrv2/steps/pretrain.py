"""Step 2 of the pipeline: SimCLRv2 contrastive pretraining on the unlabeled shards.

Reads the dataset manifest, trains encoder + projection head with NT-Xent (negatives from
every process), LARS and warmup + cosine, and writes to `output`: model.pt (a weights-only
model artifact), config.yaml (the effective configuration), history.json and curves.png.
Single process or torchrun (DDP, gloo or nccl, global BN). Checkpoints every
`runtime.checkpoint_every_steps` steps and at the end; a restarted run resumes from the newest
one (model, optimizer, schedule, RNG, epoch and batch position) and ends with the same
weights as an uninterrupted run.
"""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from simclrv2.config.loading import dump_config, to_dict
from simclrv2.config.run_config import RunConfig
from simclrv2.data.augmentations import TwoViews, pretrain_transform
from simclrv2.distributed.context import DistributedContext, init_distributed
from simclrv2.models.simclr_model import ContrastiveModel, ModelConfig
from simclrv2.objectives.nt_xent import nt_xent_loss
from simclrv2.performance import autocast, prepare_images
from simclrv2.reports.plots import plot_curves
from simclrv2.shards.loader import make_shard_loader
from simclrv2.shards.verify import load_manifest
from simclrv2.steps.model_artifact import save_model
from simclrv2.steps.training_setup import (
    bf16_enabled,
    epoch_seed,
    make_optimizer,
    per_rank_batch,
    place_model,
)
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import basename, join_uri
from simclrv2.training.checkpoint import CheckpointStore, capture_rng_state, restore_rng_state
from simclrv2.training.metrics import TrainingMetrics
from simclrv2.training.optimizer_step import optimizer_step
from simclrv2.training.progress import Progress


@dataclass(frozen=True)
class PretrainResult:
    model_uri: str
    steps: int
    final_loss: float
    final_contrastive_accuracy: float
    resumed_from: str | None


def build_pretrain_model(config: RunConfig) -> ContrastiveModel:
    torch.manual_seed(config.runtime.seed)  # the same initial weights on every rank
    encoder = config.model.encoder.encoder_config(config.data)
    return ContrastiveModel(
        ModelConfig(encoder, config.model.num_proj_layers, config.model.proj_out_dim)
    )


def contrastive_step(model, view_a, view_b, temperature, context, channels_last, bf16):
    """Forward both views as one batch (BN sees all 2N views, as the reference) -> loss."""
    images = prepare_images(torch.cat([view_a, view_b]), context.device, channels_last)
    with autocast(context.device, bf16):
        return nt_xent_loss(model(images), temperature)


def _write_outputs(store, output, model, config, history, context, result_metadata):
    save_model(store, join_uri(output, "model.pt"), model, **result_metadata)
    store.write_bytes(join_uri(output, "config.yaml"), dump_config(config).encode())
    store.write_bytes(join_uri(output, "history.json"), json.dumps(history).encode())
    with tempfile.TemporaryDirectory() as folder:
        curves = Path(folder) / "curves.png"
        keys = ("loss", "contrastive_accuracy", "learning_rate")
        plot_curves({k: [r[k] for r in history] for k in keys}, curves, "SimCLRv2 pretraining")
        store.write_bytes(join_uri(output, "curves.png"), curves.read_bytes())


def pretrain(
    config: RunConfig,
    output: str,
    checkpoint_dir: str | None = None,
    max_steps: int | None = None,
    store: ObjectStore | None = None,
    print_fn=print,
) -> PretrainResult:
    """Run (or resume) pretraining. `max_steps` stops early at that global step, with the
    schedule of the full run (so a stopped run is a prefix of the full one)."""
    context = init_distributed(config.runtime.device)
    store = store or ObjectStore()
    say = print_fn if context.is_main else (lambda *_: None)
    manifest = load_manifest(config.data.dataset, store)
    unlabeled = manifest.split("unlabeled")
    settings = config.pretrain.optimizer
    batch = per_rank_batch(settings, context)
    steps_per_epoch = unlabeled.samples // settings.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"the unlabeled split has {unlabeled.samples} images, fewer than one global batch "
            f"of {settings.batch_size}: lower pretrain.optimizer.batch_size"
        )
    bf16 = bf16_enabled(config.runtime, context.device)
    model = place_model(build_pretrain_model(config), context, config.runtime)
    optimizer, scheduler, total_steps = make_optimizer(model, settings, steps_per_epoch)
    last_step = min(total_steps, max_steps) if max_steps else total_steps
    checkpoints = CheckpointStore(
        checkpoint_dir or join_uri(output, "checkpoints"), store, config.runtime.keep_checkpoints
    )
    say(
        f"[pretrain] {unlabeled.samples} images, {context.world_size} process(es) on "
        f"{context.device}, global batch {settings.batch_size}, {steps_per_epoch} steps/epoch, "
        f"{total_steps} steps, bf16 {bf16}, channels_last {config.runtime.channels_last}"
    )
    say("[pretrain] effective config:\n" + dump_config(config))

    step, history, resumed_from, start = 0, [], None, (0, 0)
    latest = checkpoints.latest()
    if latest is not None:
        state = checkpoints.load(latest)
        getattr(model, "module", model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history, resumed_from = state["step"], state["history"], latest
        start = (state["epoch"], state["batch_in_epoch"])
        if start[1] >= steps_per_epoch:  # saved at the end of an epoch: start the next one
            start = (start[0] + 1, 0)
        say(f"[pretrain] resuming from {latest}: step {step}, epoch {start[0]}, batch {start[1]}")

    metrics = TrainingMetrics(
        "pretrain",
        config.run_id or basename(output.rstrip("/")) or "pretrain",
        config.runtime.pushgateway_url,
        config.runtime.metrics_port,
        enabled=context.is_main,
    )
    progress = Progress("pretrain", last_step, config.runtime.log_every_steps, say, start_step=step)
    views = TwoViews(
        pretrain_transform(
            config.data.image_size, config.pretrain.color_jitter_strength, config.pretrain.blur
        )
    )
    model.train()
    with metrics:
        for epoch in range(start[0], settings.epochs):
            if step >= last_step:
                break
            torch.manual_seed(epoch_seed(config.runtime.seed, context.rank, epoch))
            loader = make_shard_loader(
                manifest,
                "unlabeled",
                views,
                batch_size=batch,
                num_workers=config.data.num_workers,
                s3_settings=store.settings,
                shuffle_buffer=config.data.shuffle_buffer,
                seed=config.runtime.seed,
                samples_per_epoch=steps_per_epoch * settings.batch_size,
                rank=context.rank,
                world_size=context.world_size,
                image_mode=config.data.image_mode,
                max_corrupt_fraction=config.data.max_corrupt_fraction,
                epoch=epoch,
                persistent_workers=False,
                check=epoch == start[0],
            )
            batches = iter(loader)
            skip = start[1] if epoch == start[0] else 0
            for _ in range(skip):  # replay to the saved data position
                next(batches)
            if skip:
                restore_rng_state(state["rng"])
            for index, ((view_a, view_b), _) in enumerate(batches, start=skip + 1):
                loss, accuracy = contrastive_step(
                    model, view_a, view_b, config.pretrain.temperature, context,
                    config.runtime.channels_last, bf16,
                )  # fmt: skip
                lr = optimizer_step(loss, optimizer, scheduler)
                step += 1
                record = {
                    "step": step,
                    "epoch": epoch,
                    "loss": loss.item(),
                    "contrastive_accuracy": accuracy.item(),
                    "learning_rate": lr,
                }
                history.append(record)
                progress.update(step, len(view_a) * context.world_size, loss=record["loss"],
                                acc=record["contrastive_accuracy"], lr=lr)  # fmt: skip
                metrics.update(
                    step, epoch, images=len(view_a) * context.world_size, loss=record["loss"],
                    learning_rate=lr, contrastive_accuracy=record["contrastive_accuracy"],
                    images_per_second=progress.images_per_second(),
                    eta_seconds=progress.eta_seconds(step), total_steps=last_step,
                )  # fmt: skip
                done = step >= last_step
                if done or step % config.runtime.checkpoint_every_steps == 0:
                    _save_checkpoint(checkpoints, step, epoch, index, model, optimizer,
                                     scheduler, history, config, context)  # fmt: skip
                if done:
                    break

    if context.is_main:
        _write_outputs(store, output, model, config, history, context,
                       {"steps": step, "dataset": config.data.dataset})  # fmt: skip
        say(f"[pretrain] model written to {join_uri(output, 'model.pt')}")
    return PretrainResult(
        join_uri(output, "model.pt"),
        step,
        history[-1]["loss"] if history else float("nan"),
        history[-1]["contrastive_accuracy"] if history else float("nan"),
        resumed_from,
    )


def _save_checkpoint(
    checkpoints: CheckpointStore,
    step: int,
    epoch: int,
    batch_in_epoch: int,
    model,
    optimizer,
    scheduler,
    history: list[dict],
    config: RunConfig,
    context: DistributedContext,
) -> None:
    """Rank 0 writes; every rank waits, so no rank runs ahead of the last durable state."""
    if context.is_main:
        checkpoints.save(
            step,
            {
                "model": getattr(model, "module", model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "rng": capture_rng_state(),
                "history": history,
                "config": to_dict(config),
            },
        )
    if context.distributed:
        dist.barrier()
