"""SimCLRv2 image augmentations (torchvision.transforms.v2).

The recipe follows the official reference code, google-research/simclr ``tf2/data_util.py``:

- pretraining: random resized crop (area 8-100 %, aspect 3/4-4/3) -> horizontal flip ->
  colour jitter (brightness, contrast, saturation 0.8 s, hue 0.2 s, random order, p=0.8) ->
  grayscale (p=0.2) -> Gaussian blur (kernel ~10 % of the image, sigma 0.1-2, p=0.5);
- fine-tuning: random resized crop and horizontal flip only;
- evaluation: centre crop of 87.5 % resized to the target size (no crop for images <= 32 px).

Every transform takes a PIL image or a (C, H, W) uint8/float tensor with 1 (grey) or 3 channels
and returns a plain float32 tensor in [0, 1] of shape (C, image_size, image_size). There is no
mean/std normalisation: the reference feeds the network [0, 1] pixels.

Grey (1-channel) images need no special handling: torchvision's saturation and hue adjustments
are identities on one channel (as in PIL) and RandomGrayscale keeps the input channel count.
"""

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import v2

# The reference samples crops with area in [8 %, 100 %] and aspect ratio in [3/4, 4/3].
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# The reference centre-crops 87.5 % of the shorter side for evaluation (standard for ImageNet).
CROP_FRACTION = 0.875
# Colour distortion, greyscale and blur are each applied with these probabilities.
COLOR_JITTER_P = 0.8
GRAYSCALE_P = 0.2
BLUR_P = 0.5
BLUR_SIGMA = (0.1, 2.0)
# Images this size or smaller use the CIFAR recipe: no blur in pretraining, no eval crop.
SMALL_IMAGE_SIZE = 32
# The reference resizes with bicubic interpolation.
_INTERPOLATION = v2.InterpolationMode.BICUBIC

Transform = Callable[[Any], torch.Tensor]


def _clamp01(image: torch.Tensor) -> torch.Tensor:
    # Bicubic resizing and blending can overshoot [0, 1]; the reference clips at the end.
    # A module-level function (not a lambda) keeps the transform picklable for DataLoader workers.
    return image.clamp(0.0, 1.0)


def _to_float() -> list[v2.Transform]:
    # PIL / uint8 -> float32 in [0, 1] first, so that every random op runs on float tensors;
    # float tensor inputs pass through unchanged.
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


def _finish() -> list[v2.Transform]:
    # Return plain tensors (not tv_tensors.Image subclasses), clipped to [0, 1].
    return [v2.ToPureTensor(), v2.Lambda(_clamp01)]


def _random_resized_crop(image_size: int) -> v2.RandomResizedCrop:
    return v2.RandomResizedCrop(
        image_size,
        scale=CROP_SCALE,
        ratio=CROP_RATIO,
        interpolation=_INTERPOLATION,
        antialias=True,
    )


def blur_kernel_size(image_size: int) -> int:
    """Gaussian blur kernel size as the reference computes it: about 10 % of the image, odd.

    The reference asks for ``image_size // 10`` and rounds it to ``2 * radius + 1`` with
    ``radius = (image_size // 10) // 2`` (224 -> 23, 96 -> 9, 32 -> 3). A result of 1 means
    the blur would be a no-op.
    """
    radius = (image_size // 10) // 2
    return 2 * radius + 1


def color_distortion(color_jitter_strength: float) -> v2.RandomApply:
    """Colour jitter of strength s with p=0.8: brightness, contrast and saturation 0.8 s, hue
    0.2 s. torchvision's ColorJitter applies its four ops in a random order, as the reference
    does; its brightness is multiplicative, matching the reference's 'simclrv2' impl."""
    s = color_jitter_strength
    return v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=COLOR_JITTER_P)


def random_blur(kernel_size: int) -> v2.RandomApply:
    """Gaussian blur with sigma uniform in [0.1, 2.0], p=0.5."""
    return v2.RandomApply([v2.GaussianBlur(kernel_size, sigma=BLUR_SIGMA)], p=BLUR_P)


def pretrain_transform(
    image_size: int, color_jitter_strength: float = 1.0, blur: bool | None = None
) -> v2.Compose:
    """Contrastive pretraining augmentation (one view; wrap it in :class:`TwoViews`).

    Args:
        image_size: output height and width.
        color_jitter_strength: ``s`` in the reference: brightness, contrast and saturation
            jitter 0.8 s, hue 0.2 s. The reference uses 1.0 for ImageNet and 0.5 for CIFAR-10;
            the default is not changed with the image size, pass 0.5 for the CIFAR recipe.
        blur: apply Gaussian blur with p=0.5. ``None`` follows the reference: on for images
            larger than 32 px, off for 32 px and smaller (the CIFAR recipe drops blur). Blur is
            skipped when the kernel would be 1 px (images under 20 px).
    """
    if blur is None:
        blur = image_size > SMALL_IMAGE_SIZE
    kernel = blur_kernel_size(image_size)

    transforms: list[v2.Transform] = [
        *_to_float(),
        _random_resized_crop(image_size),
        v2.RandomHorizontalFlip(p=0.5),
        color_distortion(color_jitter_strength),
        v2.RandomGrayscale(p=GRAYSCALE_P),
    ]
    if blur and kernel > 1:
        transforms.append(random_blur(kernel))
    transforms += _finish()
    return v2.Compose(transforms)


def finetune_transform(image_size: int) -> v2.Compose:
    """Fine-tuning / linear-evaluation training augmentation: random resized crop and flip."""
    return v2.Compose(
        [
            *_to_float(),
            _random_resized_crop(image_size),
            v2.RandomHorizontalFlip(p=0.5),
            *_finish(),
        ]
    )


def eval_transform(image_size: int, crop_fraction: float = CROP_FRACTION) -> v2.Compose:
    """Deterministic evaluation preprocessing.

    For images larger than 32 px: resize the shorter side to ``image_size / crop_fraction`` and
    take the central ``image_size`` square (224 -> resize 256, crop 224), which is the
    reference's 87.5 % centre crop. For 32 px and smaller the reference disables the crop, so
    the image is only resized to ``image_size`` x ``image_size`` (a no-op if already that size).
    """
    if image_size > SMALL_IMAGE_SIZE:
        resize: list[v2.Transform] = [
            v2.Resize(round(image_size / crop_fraction), interpolation=_INTERPOLATION),
            v2.CenterCrop(image_size),
        ]
    else:
        resize = [v2.Resize((image_size, image_size), interpolation=_INTERPOLATION)]
    return v2.Compose([*_to_float(), *resize, *_finish()])


class TwoViews:
    """Returns two independent random views of one image, for contrastive pretraining."""

    def __init__(self, transform: Transform) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(image), self.transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"
