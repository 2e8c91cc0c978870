"""How a training step turns loader batches into the images it trains on: `data.pipeline`.

- cpu: DataLoader workers decode and augment each image (augmentations.py); the batch arrives
  ready and is copied to the device.
- gpu: workers only decode; the batch (uint8, padded when sizes differ) is copied to the
  device and augmented there as a whole (device_augmentations.py).
- auto: gpu when training on CUDA, else cpu. On a CPU the batched ops are much faster than
  the per-image path (28 px, two views: 9,000 images/s on 2 threads against 540 images/s on
  one core), but the quick start's step is bound by the network, not the data, and it ran at
  the same speed either way (182-204 vs 184 images/s, benchmarks/README.md); so CPU runs keep
  the per-image path.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import default_collate

from simclrv2.data.augmentations import (
    TwoViews,
    finetune_transform,
    pretrain_transform,
)
from simclrv2.data.device_augmentations import (
    FinetuneView,
    PretrainViews,
    to_device_batch,
)


def choose_pipeline(setting: str, device: torch.device) -> tuple[str, str]:
    """-> (cpu or gpu, why), for the log."""
    if setting in ("cpu", "gpu"):
        return setting, "data.pipeline"
    if setting != "auto":
        raise ValueError(f"data.pipeline must be cpu, gpu or auto, got {setting!r}")
    if device.type == "cuda":
        return "gpu", "auto: training on CUDA"
    return "cpu", "auto: no CUDA"


def collate_decoded(samples: list[tuple]) -> list:
    """Batch decoded samples: images stacked when they share a size, else kept as a list
    (the device path pads them); labels, logits and keys as default_collate does."""
    columns = list(zip(*samples, strict=True))
    images = columns[0]
    if all(image.shape == images[0].shape for image in images):
        first = torch.stack(images)
    else:
        first = list(images)
    return [first, *(default_collate(list(column)) for column in columns[1:])]


@dataclass(frozen=True)
class StepData:
    """A step's augmentation: `transform` runs in the loader workers (None: decode only),
    `on_device` maps the loader's image part of a batch to the device tensors to train on."""

    pipeline: str
    reason: str
    transform: Callable | None
    collate_fn: Callable | None
    on_device: Callable[[object, torch.device], object]

    def describe(self) -> str:
        where = "per image in the loader workers" if self.pipeline == "cpu" else "as one batch"
        return f"data pipeline {self.pipeline} (augment {where}; {self.reason})"


def _move(images, device: torch.device):
    """The cpu path: ready views, only copied (pinned memory makes the copy asynchronous)."""
    if isinstance(images, (tuple, list)):
        return [view.to(device, non_blocking=True) for view in images]
    return images.to(device, non_blocking=True)


def pretrain_data(setting: str, device: torch.device, image_size: int, color_jitter_strength:
                  float, blur: bool | None) -> StepData:  # fmt: skip
    """Two views per image: (view_a, view_b) on the device."""
    pipeline, reason = choose_pipeline(setting, device)
    if pipeline == "cpu":
        transform = TwoViews(pretrain_transform(image_size, color_jitter_strength, blur))
        return StepData(pipeline, reason, transform, None, _move)
    views = PretrainViews(image_size, color_jitter_strength, blur)
    return StepData(
        pipeline, reason, None, collate_decoded,
        lambda images, device: views(to_device_batch(images, device)),
    )  # fmt: skip


def finetune_data(setting: str, device: torch.device, image_size: int) -> StepData:
    """One randomly cropped and flipped view per image (fine-tuning and distillation)."""
    pipeline, reason = choose_pipeline(setting, device)
    if pipeline == "cpu":
        return StepData(pipeline, reason, finetune_transform(image_size), None, _move)
    view = FinetuneView(image_size)
    return StepData(
        pipeline, reason, None, collate_decoded,
        lambda images, device: view(to_device_batch(images, device)),
    )  # fmt: skip
