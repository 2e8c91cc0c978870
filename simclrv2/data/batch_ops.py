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


# Antialiased bicubic as torchvision (and PIL) compute it: Keys' cubic with a = -0.5, its
# support widened by the downscaling factor.
_CUBIC_A = -0.5
_CUBIC_SUPPORT = 2.0
# Views gathered at once: bounds the temporary copy of their source images (elements).
_CHUNK_ELEMENTS = 2**26


def _cubic(x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    a = _CUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_weights(
    start: torch.Tensor, length: torch.Tensor, resized: torch.Tensor, offset: torch.Tensor,
    size: int, padded: int,
) -> torch.Tensor:  # fmt: skip
    """(N, size, padded) matrices: row i of matrix n is output pixel i of this 1-D resample:
    the segment [start, start + length) of a padded axis resized to `resized` pixels with
    antialiased bicubic, of which pixels [offset, offset + size) are kept. The taps, their
    clipping to the segment and their renormalisation follow torchvision's
    `resize(..., antialias=True)` on the cropped image (aten's separable AA kernel)."""
    start, length = start.double()[:, None, None], length.double()[:, None, None]
    resized, offset = resized.double()[:, None, None], offset.double()[:, None, None]
    scale = length / resized
    support = _CUBIC_SUPPORT * scale.clamp(min=1.0)
    inverse = 1.0 / scale.clamp(min=1.0)
    i = torch.arange(size, dtype=torch.float64)[None, :, None] + offset
    centre = (i + 0.5) * scale
    first = torch.trunc(centre - support + 0.5).clamp(min=0)
    last = torch.minimum(torch.trunc(centre + support + 0.5), length)
    j = torch.arange(padded, dtype=torch.float64)[None, None, :] - start  # in the segment
    weights = _cubic((j - centre + 0.5) * inverse)
    weights = torch.where((j >= first) & (j < last), weights, torch.zeros_like(weights))
    return (weights / weights.sum(dim=2, keepdim=True)).float()


def resample(
    images: torch.Tensor, source: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor
) -> torch.Tensor:
    """out[k] = rows[k] @ images[source[k]] @ columns[k]^T for every k (two matmuls), in
    chunks so the gathered source images stay bounded."""
    n = len(source)
    _, channels, height, width = images.shape
    chunk = max(1, _CHUNK_ELEMENTS // (channels * height * width))
    rows = rows.to(images.device, non_blocking=True)
    columns = columns.to(images.device, non_blocking=True)
    outputs = []
    for begin in range(0, n, chunk):
        index = source[begin : begin + chunk].to(images.device, non_blocking=True)
        picked = images.index_select(0, index)  # (k, C, H, W)
        across = picked @ columns[begin : begin + chunk, None].transpose(-1, -2)  # (k, C, H, S)
        outputs.append(rows[begin : begin + chunk, None] @ across)  # (k, C, S, S)
    return torch.cat(outputs)


def crop_and_resize(
    images: torch.Tensor, boxes: torch.Tensor, source: torch.Tensor, size: int
) -> torch.Tensor:
    """Cut box k (x1, y1, x2, y2, whole pixels) out of image source[k] and resize it to size x
    size with antialiased bicubic: torchvision's resized_crop(..., BICUBIC, antialias=True),
    to float rounding, for every k at once. Smaller images are padded at the bottom and right;
    the taps never reach beyond a box."""
    _, _, height, width = images.shape
    left, top, right, bottom = boxes.unbind(dim=1)
    full = torch.full((len(boxes),), size, dtype=torch.float64)
    zero = torch.zeros(len(boxes), dtype=torch.float64)
    rows = resize_weights(top, bottom - top, full, zero, size, height)
    columns = resize_weights(left, right - left, full, zero, size, width)
    return resample(images, source, rows, columns)


def resize_centre_crop(
    images: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor, resized_h: torch.Tensor,
    resized_w: torch.Tensor, size: int,
) -> torch.Tensor:  # fmt: skip
    """Resize each image to (resized_h, resized_w) and take the central size x size square,
    as torchvision's Resize then CenterCrop (crop offsets rounded as CenterCrop rounds)."""
    top = torch.round((resized_h.double() - size) / 2)
    left = torch.round((resized_w.double() - size) / 2)
    zero = torch.zeros(len(heights), dtype=torch.float64)
    rows = resize_weights(zero, heights, resized_h, top, size, images.shape[2])
    columns = resize_weights(zero, widths, resized_w, left, size, images.shape[3])
    return resample(images, torch.arange(len(heights)), rows, columns)


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
