"""Image operations on a whole batch, each sample with its own random parameters.

The building blocks of the device data path (simclrv2/data/device_augmentations.py). Each op
matches one torchvision v2 transform of the per-sample path (simclrv2/data/augmentations.py):
the same parameter distributions and the same arithmetic, only batched.

Random parameters are always drawn on the CPU from torch's global generator (a few numbers
per sample), then moved to the batch's device. So a run draws the same parameters on a CPU and
on a GPU, the training loop's per-epoch seeding and checkpointed RNG state cover them, and
choosing which samples an op applies to never waits on the GPU (the indices are known on the
host; no boolean masking of device tensors, no host sync).
"""

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)


def sample_crop_boxes(
    heights: torch.Tensor,
    widths: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int = 10,
) -> torch.Tensor:
    """Random-resized-crop boxes (x1, y1, x2, y2) in pixels, one per image, float64.

    torchvision's RandomResizedCrop sampling, vectorised: up to `attempts` tries of an area
    fraction uniform in `scale` and an aspect ratio log-uniform in `ratio`, rounded to whole
    pixels; the first try that fits is placed uniformly; when none fits, the largest centred
    crop whose ratio is within `ratio`.
    """
    n = len(heights)
    h_in, w_in = heights.double()[:, None], widths.double()[:, None]
    area = h_in * w_in * torch.empty(n, attempts, dtype=torch.float64).uniform_(*scale)
    log_ratio = torch.empty(n, attempts, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1])
    )
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= w_in) & (h > 0) & (h <= h_in)
    first = torch.argmax(fits.to(torch.int8), dim=1)  # first try that fits (0 if none)
    found = fits.any(dim=1)
    w = w.gather(1, first[:, None])[:, 0]
    h = h.gather(1, first[:, None])[:, 0]
    h_in, w_in = h_in[:, 0], w_in[:, 0]
    # Position: uniform over whole-pixel offsets, as torch.randint(0, H - h + 1).
    top = torch.floor(torch.rand(n, dtype=torch.float64) * (h_in - h + 1))
    left = torch.floor(torch.rand(n, dtype=torch.float64) * (w_in - w + 1))
    # Fallback: the whole image, or its centre cut to the nearest allowed ratio.
    in_ratio = w_in / h_in
    fb_w = torch.where(in_ratio > ratio[1], torch.round(h_in * ratio[1]), w_in)
    fb_h = torch.where(in_ratio < ratio[0], torch.round(w_in / ratio[0]), h_in)
    fb_top = torch.floor((h_in - fb_h) / 2)
    fb_left = torch.floor((w_in - fb_w) / 2)
    w, h = torch.where(found, w, fb_w), torch.where(found, h, fb_h)
    top, left = torch.where(found, top, fb_top), torch.where(found, left, fb_left)
    return torch.stack([left, top, left + w, top + h], dim=1)


def centre_boxes(heights: torch.Tensor, widths: torch.Tensor, fraction: float) -> torch.Tensor:
    """The central square of `fraction` of the shorter side, per image (x1, y1, x2, y2)."""
    side = torch.minimum(heights, widths).double() * fraction
    top = (heights.double() - side) / 2
    left = (widths.double() - side) / 2
    return torch.stack([left, top, left + side, top + side], dim=1)


def whole_boxes(heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    zeros = torch.zeros(len(heights), dtype=torch.float64)
    return torch.stack([zeros, zeros, widths.double(), heights.double()], dim=1)


def crop_and_resize(
    images: torch.Tensor, boxes: torch.Tensor, source: torch.Tensor, size: int
) -> torch.Tensor:
    """Cut box k out of image source[k] and resize it to size x size, for every k at once.

    images: (N, C, H, W) float, smaller images padded at the bottom and right (boxes never
    reach the padding). Resizing is bilinear with area averaging when shrinking (roi_align's
    adaptive sampling: ceil(box / size) points per output pixel and axis), which is what
    antialiasing does for the per-sample path's bicubic resize; enlarging is plain bilinear.
    """
    rois = torch.cat([source.double()[:, None], boxes], dim=1).to(images.device, images.dtype)
    return roi_align(images, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def flip_horizontally(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the images where `flip` (bool, CPU, one per image) is set."""
    where = flip.to(images.device, non_blocking=True)[:, None, None, None]
    return torch.where(where, images.flip(-1), images)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma; one-channel images are returned as they are."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(dim=1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b)[:, None]


def _per_sample(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return values.to(images.device, images.dtype, non_blocking=True)[:, None, None, None]


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (images * _per_sample(factor, images)).clamp_(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
    f = _per_sample(factor, images)
    return (f * images + (1 - f) * mean).clamp_(0.0, 1.0)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:  # saturation means nothing on one channel (as torchvision)
        return images
    f = _per_sample(factor, images)
    return (f * images + (1 - f) * grayscale(images)).clamp_(0.0, 1.0)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `shift` (fraction of a turn, one per image), via HSV."""
    if images.shape[1] == 1:
        return images
    h, s, v = _rgb_to_hsv(images)
    h = torch.remainder(h + _per_sample(shift, images)[:, 0], 1.0)
    return _hsv_to_rgb(h, s, v)


def _rgb_to_hsv(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = images.unbind(dim=1)
    maxc, _ = images.max(dim=1)
    minc, _ = images.min(dim=1)
    delta = maxc - minc
    grey = delta == 0
    s = delta / torch.where(grey, torch.ones_like(maxc), maxc)
    safe = torch.where(grey, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.remainder(h / 6.0, 1.0)
    return torch.where(grey, torch.zeros_like(h), h), s, maxc


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # The closed form of the six-sector table: channel n (red 5, green 3, blue 1) is
    # v - v s clamp(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6.
    n = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device)[None, :, None, None]
    k = torch.remainder(n + 6.0 * h[:, None], 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return (v[:, None] * (1 - s[:, None] * ramp)).clamp_(0.0, 1.0)


def gaussian_blur(images: torch.Tensor, kernel_size: int, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding, one sigma per image (as torchvision's
    GaussianBlur with the same sigma on both axes)."""
    n, c, height, width = images.shape
    x = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    weights = torch.exp(-0.5 * (x[None] / sigma.double()[:, None]) ** 2)
    weights = (weights / weights.sum(dim=1, keepdim=True)).to(images.device, images.dtype)
    weights = weights.repeat_interleave(c, dim=0)  # one kernel per (image, channel)
    pad = kernel_size // 2
    flat = images.reshape(1, n * c, height, width)
    flat = F.pad(flat, (pad, pad, pad, pad), mode="reflect")
    flat = F.conv2d(flat, weights[:, None, None, :], groups=n * c)
    flat = F.conv2d(flat, weights[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, height, width)


def apply_to(
    images: torch.Tensor, chosen: torch.Tensor, op, *parameters: torch.Tensor
) -> torch.Tensor:
    """Apply op(images[chosen], *parameters[chosen]) to the chosen images only (a CPU bool
    mask; the indices go to the device, so nothing waits on it). Writes into `images`."""
    index = chosen.nonzero()[:, 0]
    if len(index) == 0:
        return images
    if len(index) == len(chosen):
        return op(images, *parameters)
    on_device = index.to(images.device, non_blocking=True)
    changed = op(images.index_select(0, on_device), *(p[index] for p in parameters))
    return images.index_copy_(0, on_device, changed)
