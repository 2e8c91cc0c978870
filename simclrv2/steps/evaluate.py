"""Step 6 of the pipeline: test accuracy of any set of classifiers on the test shards.

Streams the dataset's "test" split once per model (every sample exactly once, no shuffle,
the evaluation preprocessing) and writes to `output`:
- metrics.json: {"dataset", "dataset_fingerprint", "split", "class_names", "models": {name:
  {"uri", "top1", "top5", "per_class_accuracy": {class: accuracy}, "confusion_matrix"
  (rows = true class, columns = predicted), "num_examples"}}};
- {name}_confusion_matrix.png per model and accuracy.png (top-1/top-5 per model);
- report.html: the tables and the PNGs in one self-contained page.
Evaluation is single-process: under torchrun only rank 0 evaluates, the others return {}.
"""

import json
import math
import re
import tempfile
import time
from pathlib import Path

import torch

from simclrv2.config.loading import dump_config
from simclrv2.config.run_config import RunConfig
from simclrv2.data.augmentations import eval_transform
from simclrv2.distributed.context import init_distributed
from simclrv2.evaluation.representation import representation_metrics
from simclrv2.models.simclr_model import Classifier, ContrastiveModel
from simclrv2.performance import autocast, prepare_images, prepare_model
from simclrv2.reports.accuracy_chart import plot_accuracy_bars
from simclrv2.reports.html_report import render_html_report
from simclrv2.reports.plots import plot_confusion_matrix
from simclrv2.shards.loader import make_shard_loader
from simclrv2.shards.manifest import DatasetManifest
from simclrv2.shards.verify import load_manifest
from simclrv2.steps.model_artifact import load_model
from simclrv2.steps.training_setup import bf16_enabled
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import basename, join_uri
from simclrv2.training.classifier_training import confusion_matrix, top_k_accuracy
from simclrv2.training.metrics import TrainingMetrics
from simclrv2.training.progress import Progress
from simclrv2.training.stage_health import student_vs_teacher_warnings

SPLIT = "test"
# Model names become file names (teacher_confusion_matrix.png).
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def load_classifier(store: ObjectStore, name: str, uri: str, num_classes: int) -> Classifier:
    """The model artifact at `uri`, checked to be a classifier over `num_classes` classes."""
    model, _ = load_model(store, uri)
    if not isinstance(model, Classifier):
        raise ValueError(
            f"model {name!r} ({uri}) is a contrastive (pretrained) model with no classifier: "
            "fine-tune it first (the finetune step) and evaluate the fine-tuned model"
        )
    if model.classifier.out_features != num_classes:
        raise ValueError(
            f"model {name!r} ({uri}) predicts {model.classifier.out_features} classes but the "
            f"test set has {num_classes}: it was trained on another dataset"
        )
    return model


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, class_names) -> dict:
    """top-1, top-5, per-class accuracy and confusion matrix of (N, classes) logits."""
    matrix = confusion_matrix(logits.argmax(dim=1), labels, len(class_names))
    per_class = matrix.diag().float() / matrix.sum(dim=1).clamp(min=1)
    return {
        "top1": top_k_accuracy(logits, labels, 1),
        "top5": top_k_accuracy(logits, labels, 5),
        "per_class_accuracy": dict(zip(class_names, per_class.tolist(), strict=True)),
        "confusion_matrix": matrix.tolist(),
        "num_examples": len(labels),
    }


def _batches_at_most(manifest: DatasetManifest, batch_size: int, num_workers: int) -> int:
    """Each DataLoader worker ends on its own partial batch: at most workers - 1 more batches
    than whole batches (for progress and ETA only)."""
    split = manifest.split(SPLIT)
    workers = max(1, min(num_workers, len(split.shards)))
    return math.ceil(split.samples / batch_size) + workers - 1


@torch.no_grad()
def _predict(model, loader, config, context, bf16, progress, metrics, step) -> tuple:
    """(logits (N, classes) fp32 on the CPU, labels (N,), global batch counter)."""
    in_channels = model.encoder.config.in_channels
    all_logits, all_labels, correct, seen = [], [], 0, 0
    for images, labels in loader:
        if images.shape[1] != in_channels:
            raise ValueError(
                f"the model takes {in_channels}-channel images but the test images have "
                f"{images.shape[1]}: set data.image_mode to "
                f"{'gray' if in_channels == 1 else 'rgb'}"
            )
        with autocast(context.device, bf16):
            logits = model(prepare_images(images, context.device, config.runtime.channels_last))
        logits = logits.float().cpu()
        all_logits.append(logits)
        all_labels.append(labels)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
        step += 1
        progress.update(step, len(labels), acc=correct / seen)
        metrics.update(
            step, 0, images=len(labels), accuracy=correct / seen,
            images_per_second=progress.images_per_second(),
            eta_seconds=progress.eta_seconds(step), total_steps=progress.total_steps,
        )  # fmt: skip
    if not all_labels:
        raise ValueError("the test split yielded no images: check the shards (simclrv2 verify)")
    return torch.cat(all_logits), torch.cat(all_labels), step


def _write_outputs(store: ObjectStore, output: str, results: dict, config: RunConfig) -> None:
    """PNGs (drawn in a temp folder, then uploaded), report.html, the effective config, and
    metrics.json last."""
    images = {}
    with tempfile.TemporaryDirectory() as folder:
        chart = Path(folder) / "accuracy.png"
        plot_accuracy_bars(results["models"], chart, f"Test accuracy ({results['dataset']})")
        images["top-1 / top-5 accuracy"] = chart.read_bytes()
        for name, model_metrics in results["models"].items():
            path = Path(folder) / f"{name}_confusion_matrix.png"
            title = f"{name}: top-1 {model_metrics['top1']:.1%}"
            matrix = torch.tensor(model_metrics["confusion_matrix"])
            plot_confusion_matrix(matrix, results["class_names"], path, title)
            images[f"{name}: confusion matrix"] = path.read_bytes()
        for path in sorted(Path(folder).iterdir()):
            store.write_bytes(join_uri(output, path.name), path.read_bytes())
    report = render_html_report("SimCLRv2 evaluation", results, images)
    store.write_bytes(join_uri(output, "report.html"), report.encode())
    store.write_bytes(join_uri(output, "config.yaml"), dump_config(config).encode())
    store.write_bytes(join_uri(output, "metrics.json"), json.dumps(results, indent=2).encode())


def _load_pretrained(store: ObjectStore, uri: str) -> ContrastiveModel:
    model, _ = load_model(store, uri)
    if not isinstance(model, ContrastiveModel):
        raise ValueError(f"{uri} is not a pretrain output (a contrastive model)")
    return model


def _representation(model, uri, manifest, config, context, bf16, s3_settings, print_fn) -> dict:
    started = time.perf_counter()
    found = {"uri": uri} | representation_metrics(
        model.encoder, manifest, config, context.device, bf16, s3_settings
    )
    print_fn(
        f"[evaluate] pretrained encoder, frozen: linear {found['linear_top1']:.2%} (weight decay "
        f"{found['linear_weight_decay']:g}, chosen on held-out labeled images), kNN "
        f"{found['knn_top1']:.2%}, in {time.perf_counter() - started:.1f} s"
    )
    return found


def _print_table(results: dict, print_fn) -> None:
    print_fn(f"\nTest accuracy ({results['dataset']}, {results['split']} split)")
    print_fn(f"  {'model':<24} {'top-1':>7} {'top-5':>7} {'examples':>9}")
    for name, m in results["models"].items():
        print_fn(f"  {name:<24} {m['top1']:>7.2%} {m['top5']:>7.2%} {m['num_examples']:>9}")
    if "representation" in results:
        found = results["representation"]
        for name in ("linear", "knn"):
            label = f"pretrained ({'linear' if name == 'linear' else 'kNN'}, frozen)"
            print_fn(f"  {label:<24} {found[name + '_top1']:>7.2%} {'':>7} {'':>9}")


def evaluate(
    config: RunConfig,
    models: dict[str, str],
    output: str,
    store: ObjectStore | None = None,
    print_fn=print,
    batch_size: int = 256,
    stage_warnings: dict[str, list[str]] | None = None,
    pretrained: str | None = None,
) -> dict:
    """Evaluate each model (display name -> model artifact URI) on config.data.dataset's test
    split; write metrics.json, PNGs and report.html to `output`; return the metrics.

    pretrained: the pretrain step's model: its encoder's linear evaluation and kNN accuracy
    (frozen features, fitted on the labeled split) go under metrics.json's "representation".

    stage_warnings: what the training steps found wrong with their results (stage -> warnings,
    their warnings.json); shown in the report with the evaluation's own (the student far
    below its teacher) under metrics.json's "warnings"."""
    context = init_distributed(config.runtime.device)
    if not context.is_main:
        return {}
    if not models:
        raise ValueError("no models to evaluate: give at least one name -> model URI")
    for name in models:
        if not _MODEL_NAME.match(name):
            raise ValueError(
                f"model name {name!r} must start with a letter or digit and use only letters, "
                "digits, '.', '-' and '_' (it names the output files)"
            )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    store = store or ObjectStore()
    store.use_retry_budget(config.storage)  # the run config's outage budget
    manifest = load_manifest(config.data.dataset, store)
    class_names = list(manifest.class_names)
    test = manifest.split(SPLIT)
    # Every artifact is checked before any evaluation starts.
    loaded = {
        name: load_classifier(store, name, uri, len(class_names)) for name, uri in models.items()
    }
    encoder_model = _load_pretrained(store, pretrained) if pretrained is not None else None
    bf16 = bf16_enabled(config.runtime, context.device)
    print_fn(
        f"[evaluate] {len(models)} model(s) on {test.samples} test images of "
        f"{config.data.dataset}, device {context.device}, bf16 {bf16}, "
        f"channels_last {config.runtime.channels_last}"
    )
    per_model_batches = _batches_at_most(manifest, batch_size, config.data.num_workers)
    progress = Progress(
        "evaluate", per_model_batches * len(models), config.runtime.log_every_steps, print_fn
    )
    metrics = TrainingMetrics(
        "evaluate",
        config.run_id or basename(output.rstrip("/")) or "evaluate",
        config.runtime.pushgateway_url,
        config.runtime.metrics_port,
    )
    results = {
        "dataset": config.data.dataset,
        "dataset_fingerprint": manifest.fingerprint,
        "split": SPLIT,
        "class_names": class_names,
        "models": {},
    }
    step = 0
    with metrics:
        for index, name in enumerate(models):
            model = loaded.pop(name)  # dropped after its pass: one model in memory at a time
            print_fn(f"[evaluate] {name}: {models[name]}")
            started = time.perf_counter()
            loader = make_shard_loader(
                manifest,
                SPLIT,
                eval_transform(config.data.image_size),
                batch_size=batch_size,
                num_workers=config.data.num_workers,
                s3_settings=store.settings,
                shuffle_buffer=0,
                seed=config.runtime.seed,
                rank=0,
                world_size=1,  # one process reads every test sample
                image_mode=config.data.image_mode,
                max_corrupt_fraction=config.data.max_corrupt_fraction,
                check=index == 0,
                persistent_workers=False,
            )
            model = prepare_model(model, context.device, config.runtime.channels_last).eval()
            logits, labels, step = _predict(
                model, loader, config, context, bf16, progress, metrics, step
            )
            del model
            results["models"][name] = {"uri": models[name]} | classification_metrics(
                logits, labels, class_names
            )
            print_fn(
                f"[evaluate] {name}: {len(labels)} images in {time.perf_counter() - started:.1f}"
                f" s, top-1 {results['models'][name]['top1']:.2%}"
            )
            if len(labels) != test.samples:
                print_fn(
                    f"[evaluate] {name}: {test.samples - len(labels)} undecodable test images "
                    "were skipped"
                )
        if pretrained is not None:
            results["representation"] = _representation(
                encoder_model,
                pretrained,
                manifest,
                config,
                context,
                bf16,
                store.settings,
                print_fn,
            )
        warnings = {stage: list(found) for stage, found in (stage_warnings or {}).items()
                    if found}  # fmt: skip
        own = student_vs_teacher_warnings(results["models"], config.promotion.max_below_teacher)
        if own:
            warnings["evaluate"] = own
        results["warnings"] = warnings
        metrics.set_warnings(sum(len(found) for found in warnings.values()))
        _write_outputs(store, output, results, config)
    _print_table(results, print_fn)
    for stage, found in results["warnings"].items():
        for warning in found:
            print_fn(f"[evaluate] WARNING ({stage}): {warning}")
    print_fn(f"[evaluate] metrics.json, report.html and plots in {output}")
    return results
