"""Step 5 of the pipeline: a student learns from the teacher's stored soft labels.

Trains on the unlabeled images with the teacher logits the pseudolabel step stored beside
them (the teacher never runs here): L = -sum_y P_T(y|x; tau) log P_S(y|x; tau). The student
is the teacher's architecture (self-distillation) or a smaller encoder (distill.student),
trained from random weights. With distill.alpha > 0 every step also takes a labeled batch:
L = (1 - alpha) L_distill + alpha CE(labels).
"""

import torch
import torch.nn.functional as F

from simclrv2.config.run_config import RunConfig
from simclrv2.data.step_data import finetune_data
from simclrv2.models.simclr_model import Classifier
from simclrv2.objectives.distillation import distillation_loss, teacher_probabilities
from simclrv2.performance import autocast, prepare_images, prepare_model
from simclrv2.shards.loader import make_shard_loader
from simclrv2.shards.paired_loader import make_distill_loader
from simclrv2.shards.verify import load_manifest
from simclrv2.steps.finetune import TrainResult
from simclrv2.steps.model_artifact import load_model
from simclrv2.steps.step_context import start_step
from simclrv2.steps.step_outputs import write_step_outputs
from simclrv2.steps.training_loop import run_training_loop
from simclrv2.steps.training_setup import make_optimizer, place_model
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import join_uri
from simclrv2.training.stage_health import distillation_warnings


class Zipped:
    """Two loaders side by side, re-iterable (each pass zips a new pass of both)."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def __iter__(self):
        return zip(self.first, self.second, strict=False)


def build_student(config: RunConfig, teacher: Classifier, num_classes: int) -> Classifier:
    torch.manual_seed(config.runtime.seed)
    if config.distill.student is None:
        encoder = teacher.encoder.config  # self-distillation: the teacher's architecture
    else:
        encoder = config.distill.student.encoder_config(config.data)
    return Classifier(
        encoder, num_classes, 0, config.model.num_proj_layers, zero_init_classifier=False
    )


def distill(
    config: RunConfig,
    output: str,
    teacher_uri: str,
    pseudo_labels: str,
    checkpoint_dir: str | None = None,
    max_steps: int | None = None,
    store: ObjectStore | None = None,
    print_fn=print,
) -> TrainResult:
    """pseudo_labels: the pseudolabel step's output (its manifest names the image shards);
    not read with distill.teacher online, where the teacher labels each augmented view."""
    store = store or ObjectStore()
    images = load_manifest(config.data.dataset, store)
    online = config.distill.teacher == "online"
    pseudo = None if online else load_manifest(pseudo_labels, store)
    settings = config.distill.optimizer
    samples = images.split("unlabeled").samples
    step = start_step("distill", config, settings, samples, output, checkpoint_dir, store,
                      print_fn)  # fmt: skip
    teacher, _ = load_model(store, teacher_uri)
    if not isinstance(teacher, Classifier):
        raise ValueError(f"{teacher_uri} is not a classifier: distill from the finetune output")
    num_classes = len(images.class_names)
    student = build_student(config, teacher, num_classes)
    model = place_model(student, step.context, config.runtime)
    optimizer, scheduler, total = make_optimizer(
        model, settings, step.budget, classifier_prefixes=("classifier",)
    )
    last_step = min(total, max_steps) if max_steps else total
    data = finetune_data(config.data.pipeline, step.context.device, config.data.image_size)
    step.say(f"[distill] {data.describe()}")
    transform = data.transform
    tau, alpha = config.distill.temperature, config.distill.alpha
    common = {
        "batch_size": step.batch,
        "num_workers": config.data.num_workers,
        "s3_settings": store.settings,
        "shuffle_buffer": config.data.shuffle_buffer,
        "seed": config.runtime.seed,
        "samples_per_epoch": step.budget.samples_per_epoch,
        "rank": step.context.rank,
        "world_size": step.context.world_size,
        "image_mode": config.data.image_mode,
        "max_corrupt_fraction": config.data.max_corrupt_fraction,
        "persistent_workers": True,
        "collate_fn": data.collate_fn,
        "pin_memory": step.context.device.type == "cuda",
    }

    device, channels_last = step.context.device, config.runtime.channels_last
    if online:  # frozen, in eval mode (BN running statistics), on every rank
        teacher = prepare_model(teacher, device, channels_last).eval().requires_grad_(False)
        step.say("[distill] teacher online: it labels the student's own augmented views")

    def make_loader(epoch: int, check: bool):
        if online:
            unlabeled = make_shard_loader(images, "unlabeled", transform, epoch=epoch,
                                          check=check, **common)  # fmt: skip
        else:
            unlabeled = make_distill_loader(images, pseudo, transform, epoch=epoch,
                                            check=check, **common)  # fmt: skip
        if alpha == 0:
            return unlabeled
        labeled = make_shard_loader(images, "labeled", transform, epoch=epoch, check=check,
                                    **common)  # fmt: skip
        return Zipped(unlabeled, labeled)

    def views(batch_images):
        return prepare_images(data.on_device(batch_images, device), device, channels_last)

    def logits_of(network, batch_views):
        with autocast(device, step.bf16):
            return network(batch_views).float()

    def loss_fn(batch):
        unlabeled, labeled = (batch, None) if alpha == 0 else batch
        batch_views = views(unlabeled[0])
        if online:
            with torch.no_grad():
                teacher_logits = logits_of(teacher, batch_views)
        else:
            teacher_logits = unlabeled[1].to(device)
        probs = teacher_probabilities(teacher_logits, tau)
        logits = logits_of(model, batch_views)
        loss = distillation_loss(logits, probs, tau)
        agreement = (logits.argmax(1) == probs.argmax(1)).float().mean()
        if labeled is not None:
            labels = labeled[1].to(step.context.device)
            labeled_logits = logits_of(model, views(labeled[0]))
            loss = (1 - alpha) * loss + alpha * F.cross_entropy(labeled_logits, labels)
        return loss, {"teacher_agreement": agreement}, len(batch_views)

    result = run_training_loop(
        "distill", config, step.context, model, optimizer, scheduler, step.checkpoints,
        step.metrics, step.budget.epochs, step.budget.steps_per_epoch, last_step, make_loader,
        loss_fn, step.say, check_health=distillation_warnings,
    )  # fmt: skip
    model_uri = join_uri(output, "model.pt")
    if step.context.is_main:
        write_step_outputs(
            store, output, model, config, result.history, f"distillation (tau {tau})",
            ("loss", "teacher_agreement", "learning_rate"), warnings=result.warnings,
            steps=result.steps,
            teacher=teacher_uri, pseudo_labels=pseudo_labels, dataset=config.data.dataset,
        )  # fmt: skip
        step.say(f"[distill] student written to {model_uri}")
    final = result.history[-1]["loss"] if result.history else float("nan")
    return TrainResult(model_uri, result.steps, final, result.resumed_from)
