"""The SimCLRv2 augmentations on a whole batch, on the device that trains (`data.pipeline: gpu`).

With the per-sample path (`data.pipeline: cpu`, simclrv2/data/augmentations.py) DataLoader
workers decode and augment every view with PIL and torchvision, one image at a time: a GPU
training a ResNet-50 on thousands of views per second needs dozens of CPU cores for that. Here
workers only decode (uint8 tensors) and the training process augments the whole batch at once
on the GPU: crop and resize, flip, colour jitter in a random order per image,
greyscale, Gaussian blur, all with per-image random parameters drawn as the per-sample path
draws them (tests/test_device_augmentations.py checks the distributions side by side). The
arithmetic is the per-sample path's too, antialiased bicubic resizing included (as resampling
matrices, batch_ops.crop_and_resize); only the random streams differ.

On a CPU-only machine the same code runs on the CPU (that is how the tests run it).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from simclrv2.data import batch_ops
from simclrv2.data.augmentations import (
    BLUR_P,
    BLUR_SIGMA,
    COLOR_JITTER_P,
    CROP_FRACTION,
    CROP_RATIO,
    CROP_SCALE,
    GRAYSCALE_P,
    SMALL_IMAGE_SIZE,
    blur_kernel_size,
)

Images = torch.Tensor | Sequence[torch.Tensor]


@dataclass(frozen=True)
class DeviceBatch:
    """Decoded images on the device as one float batch in [0, 1], padded to the largest,
    with each image's true height and width (CPU tensors)."""

    pixels: torch.Tensor
    heights: torch.Tensor
    widths: torch.Tensor

    def __len__(self) -> int:
        return len(self.heights)


def to_device_batch(images: Images, device: torch.device) -> DeviceBatch:
    """uint8 (C, H, W) images (a stacked batch or a list of any sizes) -> DeviceBatch."""
    if isinstance(images, torch.Tensor):
        n, _, height, width = images.shape
        pixels = images.to(device, non_blocking=True).float().div_(255)
        full = torch.full((n,), height), torch.full((n,), width)
        return DeviceBatch(pixels, *full)
    if not images:
        raise ValueError("an empty batch has no images to augment")
    heights = torch.tensor([image.shape[-2] for image in images])
    widths = torch.tensor([image.shape[-1] for image in images])
    channels = images[0].shape[0]
    padded = torch.zeros(len(images), channels, int(heights.max()), int(widths.max()),
                         dtype=torch.uint8)  # fmt: skip
    for k, image in enumerate(images):
        padded[k, :, : image.shape[-2], : image.shape[-1]] = image
    if device.type == "cuda":
        padded = padded.pin_memory()
    pixels = padded.to(device, non_blocking=True).float().div_(255)
    return DeviceBatch(pixels, heights, widths)


@dataclass(frozen=True)
class ColorJitterParams:
    """What one draw of the colour jitter decides for each image (CPU tensors)."""

    applied: torch.Tensor  # bool (N,)
    order: torch.Tensor  # (N, 4): a permutation of brightness, contrast, saturation, hue
    factors: torch.Tensor  # (N, 4): brightness, contrast, saturation factors; hue shift


def sample_color_jitter(n: int, strength: float, p: float = COLOR_JITTER_P) -> ColorJitterParams:
    """torchvision's ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) under RandomApply(p): factors
    uniform in [max(0, 1 - 0.8 s), 1 + 0.8 s], hue shift uniform in [-0.2 s, 0.2 s], the four
    ops in a uniformly random order."""
    applied = torch.rand(n) < p
    order = torch.argsort(torch.rand(n, 4), dim=1)
    jitter = 0.8 * strength
    factors = torch.empty(n, 4)
    factors[:, :3].uniform_(max(0.0, 1 - jitter), 1 + jitter)
    factors[:, 3].uniform_(-0.2 * strength, 0.2 * strength)
    return ColorJitterParams(applied, order, factors)


_JITTER_OPS = (
    batch_ops.adjust_brightness,
    batch_ops.adjust_contrast,
    batch_ops.adjust_saturation,
    batch_ops.adjust_hue,
)


def color_jitter(images: torch.Tensor, params: ColorJitterParams) -> torch.Tensor:
    """Each image gets its four ops in its own order: at each of the four positions, every
    op is applied to the images that have it there."""
    for position in range(4):
        for op_index, op in enumerate(_JITTER_OPS):
            chosen = params.applied & (params.order[:, position] == op_index)
            images = batch_ops.apply_to(images, chosen, op, params.factors[:, op_index])
    return images


def random_grayscale(images: torch.Tensor, p: float = GRAYSCALE_P) -> torch.Tensor:
    chosen = torch.rand(len(images)) < p
    channels = images.shape[1]

    def to_grey(batch):
        return batch_ops.grayscale(batch).expand(-1, channels, -1, -1)

    return batch_ops.apply_to(images, chosen, to_grey)


def random_blur(images: torch.Tensor, kernel_size: int, p: float = BLUR_P) -> torch.Tensor:
    chosen = torch.rand(len(images)) < p
    sigma = torch.empty(len(images)).uniform_(*BLUR_SIGMA)
    return batch_ops.apply_to(
        images, chosen, lambda batch, s: batch_ops.gaussian_blur(batch, kernel_size, s), sigma
    )


def random_crop_flip(batch: DeviceBatch, image_size: int, source: torch.Tensor) -> torch.Tensor:
    """A random resized crop of image source[k] for each k, then a random flip (p = 0.5)."""
    boxes = batch_ops.sample_crop_boxes(
        batch.heights[source], batch.widths[source], CROP_SCALE, CROP_RATIO
    )
    views = batch_ops.crop_and_resize(batch.pixels, boxes, source, image_size)
    return batch_ops.flip_horizontally(views, torch.rand(len(source)) < 0.5)


@dataclass(frozen=True)
class PretrainViews:
    """Contrastive pretraining views, the recipe of augmentations.pretrain_transform: crop,
    flip, colour jitter (p 0.8), greyscale (p 0.2), blur (p 0.5, images over 32 px)."""

    image_size: int
    color_jitter_strength: float = 1.0
    blur: bool | None = None

    def __call__(self, batch: DeviceBatch, views: int = 2) -> list[torch.Tensor]:
        """`views` independent views of every image (each (N, C, S, S) float in [0, 1])."""
        n = len(batch)
        source = torch.arange(n).repeat(views)  # all views in one pass: fewer launches
        images = random_crop_flip(batch, self.image_size, source)
        images = color_jitter(images, sample_color_jitter(len(source), self.color_jitter_strength))
        images = random_grayscale(images)
        blur = self.image_size > SMALL_IMAGE_SIZE if self.blur is None else self.blur
        kernel = blur_kernel_size(self.image_size)
        if blur and kernel > 1:
            images = random_blur(images, kernel)
        return list(images.clamp_(0.0, 1.0).split(n))


@dataclass(frozen=True)
class FinetuneView:
    """Fine-tuning / distillation view: random resized crop and flip (finetune_transform)."""

    image_size: int

    def __call__(self, batch: DeviceBatch) -> torch.Tensor:
        views = random_crop_flip(batch, self.image_size, torch.arange(len(batch)))
        return views.clamp_(0.0, 1.0)


@dataclass(frozen=True)
class EvalView:
    """Evaluation preprocessing (eval_transform): the central 87.5 % square resized to the
    target size, or for images of 32 px and less the whole image resized."""

    image_size: int
    crop_fraction: float = CROP_FRACTION

    def __call__(self, batch: DeviceBatch) -> torch.Tensor:
        size = self.image_size
        if size > SMALL_IMAGE_SIZE:  # Resize(shorter side -> round(size / fraction))
            short = round(size / self.crop_fraction)
            h, w = batch.heights.double(), batch.widths.double()
            long_h = torch.floor(short * h / w)  # int() of torchvision's long side
            long_w = torch.floor(short * w / h)
            resized_h = torch.where(h <= w, torch.full_like(h, short), long_h)
            resized_w = torch.where(h <= w, long_w, torch.full_like(w, short))
        else:  # Resize((size, size))
            resized_h = resized_w = torch.full((len(batch),), float(size), dtype=torch.float64)
        views = batch_ops.resize_centre_crop(
            batch.pixels, batch.heights, batch.widths, resized_h, resized_w, size
        )
        return views.clamp_(0.0, 1.0)
