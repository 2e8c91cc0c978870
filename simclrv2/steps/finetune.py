"""Step 3 of the pipeline: fine-tune the pretrained network on the labeled shards.

From a pretrain model artifact: encoder + projection head[:k] + a zero-initialised linear
classifier, the whole network trained (the paper fine-tunes from k = 1). With
`finetune.from_scratch` the same network starts from random weights (k = 0) and trains with
the `supervised` section's from-scratch recipe: the supervised baseline on the same labels
that every user compares against. The output (model.pt) is the teacher for pseudo-labelling.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from simclrv2.config.run_config import RunConfig
from simclrv2.data.step_data import finetune_data
from simclrv2.models.simclr_model import Classifier, ContrastiveModel
from simclrv2.performance import autocast, prepare_images
from simclrv2.shards.loader import make_shard_loader
from simclrv2.shards.verify import load_manifest
from simclrv2.steps.model_artifact import load_model
from simclrv2.steps.step_context import start_step
from simclrv2.steps.step_outputs import write_step_outputs
from simclrv2.steps.training_loop import run_training_loop
from simclrv2.steps.training_setup import make_optimizer, place_model
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import join_uri
from simclrv2.training.stage_health import classifier_warnings


@dataclass(frozen=True)
class TrainResult:
    model_uri: str
    steps: int
    final_loss: float
    resumed_from: str | None


def build_classifier(
    config: RunConfig, num_classes: int, pretrained_uri: str | None, store: ObjectStore
) -> Classifier:
    torch.manual_seed(config.runtime.seed)
    if config.finetune.from_scratch:
        encoder = config.model.encoder.encoder_config(config.data)
        return Classifier(
            encoder, num_classes, 0, config.model.num_proj_layers, zero_init_classifier=False
        )
    if pretrained_uri is None:
        raise ValueError("fine-tuning needs --pretrained MODEL (or finetune.from_scratch=true)")
    pretrained, _ = load_model(store, pretrained_uri)
    if not isinstance(pretrained, ContrastiveModel):
        raise ValueError(
            f"{pretrained_uri} is a {type(pretrained).__name__}, not a pretrain output: pass "
            "the pretrain step's model.pt as --pretrained"
        )
    channels = pretrained.config.encoder.in_channels
    if channels != config.data.channels:
        raise ValueError(
            f"{pretrained_uri} takes {channels}-channel images but data.image_mode "
            f"{config.data.image_mode!r} gives {config.data.channels}: set data.image_mode "
            "as it was for pretraining"
        )
    layers = config.finetune.proj_layers
    if layers == -1:  # the reference's ft_proj_selector -1: the whole head
        layers = pretrained.config.num_proj_layers
    return Classifier.from_pretrained(pretrained, num_classes, layers)


def classification_loss(model, images, labels, context, channels_last, bf16):
    images = prepare_images(images, context.device, channels_last)
    labels = labels.to(context.device)
    with autocast(context.device, bf16):
        logits = model(images)
    loss = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return loss, accuracy


def finetune(
    config: RunConfig,
    output: str,
    pretrained_uri: str | None = None,
    checkpoint_dir: str | None = None,
    max_steps: int | None = None,
    store: ObjectStore | None = None,
    print_fn=print,
) -> TrainResult:
    """Fine-tune (or, with finetune.from_scratch, train the supervised baseline)."""
    store = store or ObjectStore()
    manifest = load_manifest(config.data.dataset, store)
    labeled = manifest.split("labeled")
    scratch = config.finetune.from_scratch
    name = "supervised" if scratch else "finetune"
    settings = config.supervised.optimizer if scratch else config.finetune.optimizer
    algorithm = config.supervised.algorithm if scratch else "lars"
    num_classes = len(manifest.class_names)
    # Before the step starts: a wrong --pretrained fails without a process group or output.
    classifier = build_classifier(config, num_classes, pretrained_uri, store)
    step = start_step(name, config, settings, labeled.samples, output, checkpoint_dir, store,
                      print_fn, section=name)  # fmt: skip
    model = place_model(classifier, step.context, config.runtime)
    optimizer, scheduler, total = make_optimizer(
        model, settings, step.budget, classifier_prefixes=("classifier",), algorithm=algorithm
    )
    last_step = min(total, max_steps) if max_steps else total
    data = finetune_data(config.data.pipeline, step.context.device, config.data.image_size)
    step.say(f"[{name}] {data.describe()}")

    def make_loader(epoch: int, check: bool):
        return make_shard_loader(
            manifest, "labeled", data.transform, batch_size=step.batch,
            num_workers=config.data.num_workers, s3_settings=store.settings,
            shuffle_buffer=config.data.shuffle_buffer, seed=config.runtime.seed,
            samples_per_epoch=step.budget.samples_per_epoch,
            rank=step.context.rank, world_size=step.context.world_size,
            image_mode=config.data.image_mode,
            max_corrupt_fraction=config.data.max_corrupt_fraction, epoch=epoch,
            persistent_workers=True, check=check, collate_fn=data.collate_fn,
            pin_memory=step.context.device.type == "cuda",
        )  # fmt: skip

    def loss_fn(batch):
        images, labels = data.on_device(batch[0], step.context.device), batch[1]
        loss, accuracy = classification_loss(
            model, images, labels, step.context, config.runtime.channels_last, step.bf16
        )
        return loss, {"accuracy": accuracy}, len(images)

    result = run_training_loop(
        name, config, step.context, model, optimizer, scheduler, step.checkpoints, step.metrics,
        step.budget.epochs, step.budget.steps_per_epoch, last_step, make_loader, loss_fn, step.say,
        check_health=lambda history: classifier_warnings(history, num_classes, name),
    )  # fmt: skip
    model_uri = join_uri(output, "model.pt")
    if step.context.is_main:
        write_step_outputs(
            store, output, model, config, result.history,
            f"{name} on {labeled.samples} labeled images", ("loss", "accuracy", "learning_rate"),
            warnings=result.warnings, steps=result.steps, dataset=config.data.dataset,
            pretrained=pretrained_uri,
        )  # fmt: skip
        step.say(f"[{name}] model written to {model_uri}")
    final = result.history[-1]["loss"] if result.history else float("nan")
    return TrainResult(model_uri, result.steps, final, result.resumed_from)
