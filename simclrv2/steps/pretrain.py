"""Step 2 of the pipeline: SimCLRv2 contrastive pretraining on the unlabeled shards.

Reads the dataset manifest, trains encoder + projection head with NT-Xent (negatives from
every process), LARS and warmup + cosine, and writes to `output`: model.pt (a weights-only
model artifact), config.yaml (the effective configuration), history.json and curves.png.
Single process or torchrun (DDP, gloo or nccl, global BN). Checkpoints every
`runtime.checkpoint_every_steps` steps and at the end; a restarted run resumes from the newest
one (model, optimizer, schedule, RNG, epoch and batch position) and ends with the same
weights as an uninterrupted run.
"""

from dataclasses import dataclass

import torch

from simclrv2.config.run_config import RunConfig
from simclrv2.data.step_data import pretrain_data
from simclrv2.models.simclr_model import ContrastiveModel, ModelConfig
from simclrv2.objectives.momentum_memory import MomentumMemory
from simclrv2.objectives.nt_xent import nt_xent_loss
from simclrv2.performance import autocast, prepare_images
from simclrv2.shards.loader import make_shard_loader
from simclrv2.shards.verify import load_manifest
from simclrv2.steps.knn_monitor import KnnMonitor
from simclrv2.steps.step_context import start_step
from simclrv2.steps.step_outputs import write_step_outputs
from simclrv2.steps.training_loop import run_training_loop
from simclrv2.steps.training_setup import (
    make_optimizer,
    place_model,
)
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import join_uri
from simclrv2.training.stage_health import contrastive_warnings


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


def contrastive_step(model, view_a, view_b, temperature, context, channels_last, bf16, memory=None):
    """Forward both views as one batch (BN sees all 2N views, as the reference) -> loss,
    accuracy and the momentum memory's keys for this batch (None without memory)."""
    images = prepare_images(torch.cat([view_a, view_b]), context.device, channels_last)
    with autocast(context.device, bf16):
        projections = model(images)
        keys = memory.keys(images) if memory is not None else None
        negatives = memory.negatives() if memory is not None else None
        loss, accuracy = nt_xent_loss(projections, temperature, extra_negatives=negatives)
    return loss, accuracy, keys


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
    store = store or ObjectStore()
    manifest = load_manifest(config.data.dataset, store)
    settings = config.pretrain.optimizer
    samples = manifest.split("unlabeled").samples
    step = start_step(
        "pretrain", config, settings, samples, output, checkpoint_dir, store, print_fn
    )
    context, say = step.context, step.say
    model = place_model(build_pretrain_model(config), context, config.runtime)
    optimizer, scheduler, total_steps = make_optimizer(model, settings, step.budget)
    moco = config.pretrain.moco
    memory = (
        MomentumMemory(model, moco.momentum, moco.queue_size, config.model.proj_out_dim)
        if moco.enabled
        else None
    )
    batch_keys = []  # this step's momentum keys, queued after the optimizer step
    last_step = min(total_steps, max_steps) if max_steps else total_steps
    data = pretrain_data(
        config.data.pipeline, context.device, config.data.image_size,
        config.pretrain.color_jitter_strength, config.pretrain.blur,
    )  # fmt: skip
    say(f"[pretrain] {data.describe()}")

    def make_loader(epoch: int, check: bool):
        return make_shard_loader(
            manifest,
            "unlabeled",
            data.transform,
            batch_size=step.batch,
            num_workers=config.data.num_workers,
            s3_settings=store.settings,
            shuffle_buffer=config.data.shuffle_buffer,
            seed=config.runtime.seed,
            samples_per_epoch=step.budget.samples_per_epoch,
            rank=context.rank,
            world_size=context.world_size,
            image_mode=config.data.image_mode,
            max_corrupt_fraction=config.data.max_corrupt_fraction,
            epoch=epoch,
            persistent_workers=True,
            check=check,
            collate_fn=data.collate_fn,
            pin_memory=context.device.type == "cuda",
        )

    def loss_fn(batch_):
        view_a, view_b = data.on_device(batch_[0], context.device)
        loss, accuracy, keys = contrastive_step(
            model, view_a, view_b, config.pretrain.temperature, context,
            config.runtime.channels_last, step.bf16, memory,
        )  # fmt: skip
        batch_keys[:] = [keys]
        return loss, {"contrastive_accuracy": accuracy}, len(view_a)

    knn = KnnMonitor(config, manifest, context, store.settings, step.budget.epochs, step.bf16,
                     say)  # fmt: skip
    result = run_training_loop(
        "pretrain", config, context, model, optimizer, scheduler, step.checkpoints,
        step.metrics, step.budget.epochs, step.budget.steps_per_epoch, last_step, make_loader,
        loss_fn, say,
        after_step=(lambda: memory.update(model, batch_keys[0])) if memory else None,
        after_epoch=lambda epoch: knn(model, epoch),
        extra_state=memory,
        check_health=lambda history: contrastive_warnings(history, step.budget.batch_size),
    )  # fmt: skip
    history = result.history
    model_uri = join_uri(output, "model.pt")
    if context.is_main:
        write_step_outputs(
            store, output, model, config, history, "SimCLRv2 pretraining",
            ("loss", "contrastive_accuracy", "learning_rate")
            + (("knn_top1",) if config.pretrain.knn.every_epochs else ()),
            warnings=result.warnings, steps=result.steps, dataset=config.data.dataset,
        )  # fmt: skip
        say(f"[pretrain] model written to {model_uri}")
    return PretrainResult(
        model_uri,
        result.steps,
        history[-1]["loss"] if history else float("nan"),
        history[-1]["contrastive_accuracy"] if history else float("nan"),
        result.resumed_from,
    )
