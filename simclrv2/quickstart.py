"""The laptop quick start: SimCLRv2 vs supervised training on 1% of Fashion-MNIST's labels.

pretrain (all training images, labels withheld) -> fine-tune from projection layer 1 on a
class-balanced 1% subset -> test accuracy, beside a supervised baseline trained from scratch
on the same labeled images with the same recipe. Writes curves, confusion matrices and a
results.json under the output folder. Minutes on a 2-core CPU; the Kubeflow pipeline runs the
same library functions at scale.
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from simclrv2.data.augmentations import TwoViews, eval_transform, finetune_transform
from simclrv2.data.augmentations import pretrain_transform as pretrain_augmentation
from simclrv2.datasets.fashion_mnist import CLASSES, TensorImageDataset, load_fashion_mnist
from simclrv2.datasets.label_subset import balanced_subset
from simclrv2.models.resnet import EncoderConfig
from simclrv2.models.simclr_model import Classifier, ContrastiveModel, ModelConfig
from simclrv2.optim.lars import LARS, lars_param_groups
from simclrv2.optim.lr_schedule import scale_learning_rate, warmup_cosine_scheduler
from simclrv2.performance import prepare_model, select_device
from simclrv2.reports.plots import plot_confusion_matrix, plot_curves
from simclrv2.training.classifier_training import (
    confusion_matrix,
    predict,
    top_k_accuracy,
    train_classifier_epochs,
)
from simclrv2.training.contrastive_training import pretrain_epochs


@dataclass
class QuickstartConfig:
    output_dir: str = "runs/quickstart"
    data_root: str | None = None
    unlabeled_images: int = 60000  # pretraining set: the training split without labels
    label_fraction: float = 0.01  # 1% = 60 images per class
    test_images: int = 10000
    depth: int = 18
    width_multiplier: float = 0.25
    # Pretraining: the reference's CIFAR recipe (small images): tau 0.5, colour strength 0.5,
    # no blur, sqrt LR scaling; weight decay 1e-4 as the ImageNet command.
    pretrain_epochs: int = 2
    pretrain_batch_size: int = 256
    pretrain_base_lr: float = 0.075
    temperature: float = 0.5
    color_jitter_strength: float = 0.5
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1
    # Fine-tuning: the reference 1% recipe (LARS, lr 0.005 * sqrt(batch), no decay, no warmup)
    # from the first projection layer, as the paper.
    finetune_epochs: int = 60
    finetune_batch_size: int = 64
    finetune_base_lr: float = 0.005
    proj_layers: int = 1
    seed: int = 0
    device: str = "auto"
    channels_last: bool = True
    bf16: bool | None = None  # None: on where the hardware computes bf16 natively
    num_workers: int = 1

    def __post_init__(self):
        # Fail before loading data or training, with the flag to change.
        positive = (
            "unlabeled_images",
            "test_images",
            "pretrain_epochs",
            "pretrain_batch_size",
            "finetune_epochs",
            "finetune_batch_size",
        )
        for name in positive:
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"--label-fraction must be in (0, 1], got {self.label_fraction}")
        if not 0 <= self.proj_layers < 3:
            raise ValueError(
                f"--proj-layers {self.proj_layers}: fine-tuning starts from projection layer "
                "0, 1 or 2 of the 3-layer head (the paper uses 1)"
            )
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        if self.num_workers < 0:
            raise ValueError(f"--num-workers must be >= 0, got {self.num_workers}")


def _bf16_default(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def _loader(dataset, batch_size: int, shuffle: bool, workers: int, drop_last: bool, seed: int):
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def _train_classifier(model, loader, config, device, bf16, name) -> list[dict]:
    lr = scale_learning_rate(config.finetune_base_lr, config.finetune_batch_size, "sqrt")
    optimizer = LARS(lars_param_groups(model, 0.0, classifier_prefixes=("classifier",)), lr=lr)
    steps = config.finetune_epochs * len(loader)
    scheduler = warmup_cosine_scheduler(optimizer, lr, warmup_steps=0, total_steps=steps)
    return train_classifier_epochs(
        model,
        loader,
        optimizer,
        scheduler,
        config.finetune_epochs,
        device,
        config.channels_last,
        bf16,
        name=name,
        log_every=max(1, steps // 10),
    )


def _evaluate(model, loader, device, config, bf16, name, output: Path) -> dict:
    logits, labels = predict(model, loader, device, config.channels_last, bf16)
    matrix = confusion_matrix(logits.argmax(dim=1), labels, len(CLASSES))
    per_class = (matrix.diag().float() / matrix.sum(dim=1).clamp(min=1)).tolist()
    top1 = top_k_accuracy(logits, labels, 1)
    plot_confusion_matrix(
        matrix, CLASSES, output / f"{name}_confusion_matrix.png", f"{name}: top-1 {top1:.1%}"
    )
    return {
        "top1": top1,
        "top5": top_k_accuracy(logits, labels, 5),
        "per_class_accuracy": dict(zip(CLASSES, per_class, strict=True)),
        "confusion_matrix": matrix.tolist(),
    }


def run_quickstart(config: QuickstartConfig) -> dict:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    device = select_device(config.device)
    bf16 = _bf16_default(device) if config.bf16 is None else config.bf16
    print(f"[quickstart] device {device}, channels_last {config.channels_last}, bf16 {bf16}")

    train_images, train_labels = load_fashion_mnist("train", config.data_root)
    test_images, test_labels = load_fashion_mnist("test", config.data_root, config.test_images)
    unlabeled = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))
    unlabeled = unlabeled[: config.unlabeled_images]
    labeled = balanced_subset(train_labels, fraction=config.label_fraction, seed=config.seed)
    print(
        f"[quickstart] Fashion-MNIST: {len(unlabeled)} unlabeled, {len(labeled)} labeled "
        f"({config.label_fraction:.0%}, class-balanced), {len(test_images)} test images"
    )
    image_size = train_images.shape[-1]
    encoder = EncoderConfig(
        config.depth, config.width_multiplier, cifar_stem=image_size <= 32, in_channels=1
    )

    # 1. Pretraining on the unlabeled images.
    views = TwoViews(pretrain_augmentation(image_size, config.color_jitter_strength))
    pretrain_set = Subset(TensorImageDataset(train_images, train_labels, views), unlabeled)
    pretrain_loader = _loader(
        pretrain_set, config.pretrain_batch_size, True, config.num_workers, True, config.seed
    )
    model = prepare_model(ContrastiveModel(ModelConfig(encoder)), device, config.channels_last)
    lr = scale_learning_rate(config.pretrain_base_lr, config.pretrain_batch_size, "sqrt")
    optimizer = LARS(lars_param_groups(model, config.weight_decay), lr=lr)
    steps = config.pretrain_epochs * len(pretrain_loader)
    scheduler = warmup_cosine_scheduler(optimizer, lr, round(config.warmup_fraction * steps), steps)
    pretrain_history = pretrain_epochs(
        model,
        pretrain_loader,
        optimizer,
        scheduler,
        config.pretrain_epochs,
        config.temperature,
        device,
        config.channels_last,
        bf16,
        log_every=max(1, steps // 20),
    )
    plot_curves(
        {
            key: [r[key] for r in pretrain_history]
            for key in ("loss", "contrastive_accuracy", "learning_rate")
        },
        output / "pretrain_curves.png",
        "SimCLRv2 pretraining",
    )

    # 2. Fine-tuning from projection layer k, and the supervised baseline, on the same labels.
    labeled_set = Subset(
        TensorImageDataset(train_images, train_labels, finetune_transform(image_size)), labeled
    )
    labeled_loader = _loader(
        labeled_set, config.finetune_batch_size, True, config.num_workers, False, config.seed
    )
    test_loader = _loader(
        TensorImageDataset(test_images, test_labels, eval_transform(image_size)),
        512,
        False,
        config.num_workers,
        False,
        config.seed,
    )
    finetuned = Classifier.from_pretrained(model, len(CLASSES), config.proj_layers)
    finetuned = prepare_model(finetuned, device, config.channels_last)
    finetune_history = _train_classifier(
        finetuned, labeled_loader, config, device, bf16, "finetune"
    )
    torch.manual_seed(config.seed)
    baseline = Classifier(encoder, len(CLASSES), proj_layers=0, zero_init_classifier=False)
    baseline = prepare_model(baseline, device, config.channels_last)
    baseline_history = _train_classifier(
        baseline, labeled_loader, config, device, bf16, "supervised"
    )
    plot_curves(
        {
            "fine-tune loss": [r["loss"] for r in finetune_history],
            "supervised loss": [r["loss"] for r in baseline_history],
        },
        output / "finetune_curves.png",
        f"Training on {len(labeled)} labeled images",
    )

    # 3. Test accuracy of both.
    results = {
        "config": asdict(config),
        "labeled_images": len(labeled),
        "simclrv2_finetuned": _evaluate(
            finetuned, test_loader, device, config, bf16, "simclrv2", output
        ),
        "supervised_baseline": _evaluate(
            baseline, test_loader, device, config, bf16, "supervised", output
        ),
        "final_pretrain_loss": pretrain_history[-1]["loss"],
        "final_contrastive_accuracy": pretrain_history[-1]["contrastive_accuracy"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    (output / "results.json").write_text(json.dumps(results, indent=2))
    print_results(results, output)
    return results


def print_results(results: dict, output: Path) -> None:
    ours, baseline = results["simclrv2_finetuned"], results["supervised_baseline"]
    n = results["labeled_images"]
    print()
    print(f"Test accuracy with {n} labeled images (Fashion-MNIST test set)")
    print(f"  {'model':<36} {'top-1':>7} {'top-5':>7}")
    for name, metrics in (
        ("SimCLRv2 pretrain + fine-tune", ours),
        ("supervised baseline", baseline),
    ):
        print(f"  {name:<36} {metrics['top1']:>7.2%} {metrics['top5']:>7.2%}")
    print(f"Plots and results.json in {output}/ ({results['seconds']:.0f} s)")
