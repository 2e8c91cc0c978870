"""The device data path (data.pipeline: gpu) against the per-sample path (data.pipeline: cpu).

The ops are checked numerically against torchvision's functional ops with per-image factors;
the random recipes statistically, side by side on thousands of samples: each path transforms
the same probe images, a statistic is read off every output, and a two-sample
Kolmogorov-Smirnov distance compares the two distributions. With n = 3,000 per side, two
draws from one distribution stay below 0.045 with probability 0.999; a wrong range,
probability or order (say jitter p 0.5 instead of 0.8, or a crop scale of 0.2-1) moves the
distance well above 0.1. These run on the CPU here; on a GPU machine they run on CUDA too.
"""

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from simclrv2.data import batch_ops
from simclrv2.data.augmentations import (
    blur_kernel_size,
    color_distortion,
    eval_transform,
    finetune_transform,
    pretrain_transform,
    random_blur,
)
from simclrv2.data.device_augmentations import (
    EvalView,
    FinetuneView,
    PretrainViews,
    color_jitter,
    sample_color_jitter,
    to_device_batch,
)
from simclrv2.data.device_augmentations import (
    random_blur as device_random_blur,
)
from simclrv2.data.step_data import choose_pipeline, collate_decoded

SAMPLES = 3000
SAME = 0.06  # KS distance allowed between two samples of one distribution (n = 3,000 each)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest gap between the two empirical CDFs. Values are rounded to 1e-4 first: an
    untouched pixel is a point mass, and one path's float rounding (0.101960 vs 0.101961)
    must not split it."""
    a, b = a.double().round(decimals=4).sort().values, b.double().round(decimals=4).sort().values
    grid = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, grid, right=True) / len(a)
    cdf_b = torch.searchsorted(b, grid, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


def per_sample_outputs(transform, image: torch.Tensor, n: int = SAMPLES) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.stack([transform(image) for _ in range(n)])


def device_outputs(transform, image: torch.Tensor, device: str, n: int = SAMPLES):
    torch.manual_seed(2)
    batch = image.expand(n, *image.shape).contiguous()
    return transform(batch.to(device)).cpu()


# --- the ops, numerically ---------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_colour_ops_equal_torchvision_per_image(device):
    torch.manual_seed(0)
    images = torch.rand(16, 3, 12, 12)
    factors = torch.rand(16) * 1.6
    shifts = torch.rand(16) * 0.4 - 0.2
    ours_and_theirs = [
        (batch_ops.adjust_brightness, TF.adjust_brightness, factors),
        (batch_ops.adjust_contrast, TF.adjust_contrast, factors),
        (batch_ops.adjust_saturation, TF.adjust_saturation, factors),
        (batch_ops.adjust_hue, TF.adjust_hue, shifts),
    ]
    for ours, theirs, values in ours_and_theirs:
        got = ours(images.clone().to(device), values).cpu()
        want = torch.stack([theirs(images[k], float(values[k])) for k in range(16)])
        assert torch.allclose(got, want, atol=2e-6), ours.__name__
    grey = torch.rand(16, 1, 12, 12)
    got = batch_ops.adjust_contrast(grey.clone().to(device), factors).cpu()
    want = torch.stack([TF.adjust_contrast(grey[k], float(factors[k])) for k in range(16)])
    assert torch.allclose(got, want, atol=2e-6)
    assert torch.equal(batch_ops.adjust_hue(grey, shifts), grey)  # one channel: no hue


@pytest.mark.parametrize("device", DEVICES)
def test_blur_and_grayscale_equal_torchvision(device):
    torch.manual_seed(0)
    images = torch.rand(8, 3, 20, 20)
    sigmas = torch.rand(8) * 1.9 + 0.1
    got = batch_ops.gaussian_blur(images.to(device), 7, sigmas).cpu()
    want = torch.stack([TF.gaussian_blur(images[k], [7, 7], [float(sigmas[k])] * 2)
                        for k in range(8)])  # fmt: skip
    assert torch.allclose(got, want, atol=1e-6)
    want = TF.rgb_to_grayscale(images)
    assert torch.allclose(batch_ops.grayscale(images.to(device)).cpu(), want, atol=1e-6)


def test_crop_of_the_whole_image_at_its_own_size_is_the_image():
    images = torch.rand(4, 3, 16, 16)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]]).expand(4, 4).double()
    out = batch_ops.crop_and_resize(images, boxes, torch.arange(4), 16)
    assert torch.allclose(out, images, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_crop_and_resize_is_torchvisions_antialiased_bicubic_resized_crop(device):
    """Shrinking and enlarging crops, boxes at every edge, images of two sizes padded into
    one batch, several views of one image: equal to torchvision per view."""
    torch.manual_seed(0)
    small, large = torch.rand(3, 20, 30), torch.rand(3, 90, 61)
    batch = to_device_batch([(small * 255).byte(), (large * 255).byte()], torch.device(device))
    boxes = torch.tensor([[0, 0, 30, 20], [3, 5, 11, 9], [40, 10, 61, 90], [0, 0, 61, 90],
                          [17, 0, 30, 20], [7, 33, 19, 36]], dtype=torch.float64)  # fmt: skip
    source = torch.tensor([0, 0, 1, 1, 0, 1])
    got = batch_ops.crop_and_resize(batch.pixels, boxes, source, 24).cpu()
    images = [(small * 255).byte().float() / 255, (large * 255).byte().float() / 255]
    for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        want = TF.resized_crop(
            images[source[k]], y1, x1, y2 - y1, x2 - x1, [24, 24],
            interpolation=v2.InterpolationMode.BICUBIC, antialias=True,
        )  # fmt: skip
        assert torch.allclose(got[k], want, atol=2e-5), (k, (got[k] - want).abs().max())


def test_apply_to_changes_only_the_chosen_images():
    images = torch.rand(6, 1, 4, 4)
    before = images.clone()
    chosen = torch.tensor([True, False, True, False, False, True])
    out = batch_ops.apply_to(images, chosen, lambda x, f: x * 0 + f[:, None, None, None],
                             torch.arange(6.0))  # fmt: skip
    for k in range(6):
        want = torch.full((1, 4, 4), float(k)) if chosen[k] else before[k]
        assert torch.equal(out[k], want)


# --- crop and flip, statistically --------------------------------------------------------


def coordinate_image(height: int, width: int) -> torch.Tensor:
    """Channel 0 holds each pixel's x centre / width, channel 1 its y centre / height: any
    linear resize keeps them linear, so an output's extent gives back the crop box."""
    x = (torch.arange(width) + 0.5) / width
    y = (torch.arange(height) + 0.5) / height
    return torch.stack([x.expand(height, width), y[:, None].expand(height, width),
                        torch.zeros(height, width)])  # fmt: skip


def crop_statistics(views: torch.Tensor, height: int, width: int):
    """(area fraction, aspect w/h, flipped) of each view, from its coordinate channels."""
    size = views.shape[-1]
    stretch = size / (size - 1)  # output pixel centres span (size - 1) / size of the box
    x, y = views[:, 0], views[:, 1]
    w = (x.amax(dim=(1, 2)) - x.amin(dim=(1, 2))) * width * stretch
    h = (y.amax(dim=(1, 2)) - y.amin(dim=(1, 2))) * height * stretch
    flipped = x[:, :, 0].mean(1) > x[:, :, -1].mean(1)
    return w * h / (height * width), w / h, flipped


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("source", [(48, 64), (30, 30)])
def test_crop_area_aspect_and_flip_match_the_per_sample_path(device, source):
    height, width = source
    image = coordinate_image(height, width)
    size = 32
    ours = FinetuneView(size)
    dev_views = device_outputs(lambda b: ours(to_device_batch(b, torch.device(device))),
                               (image * 255).round().to(torch.uint8), device)  # fmt: skip
    # The device path reads uint8 pixels; redo the per-sample side from the same uint8 image.
    cpu_views = per_sample_outputs(finetune_transform(size), (image * 255).round().byte())
    area_c, aspect_c, flip_c = crop_statistics(cpu_views, height, width)
    area_d, aspect_d, flip_d = crop_statistics(dev_views, height, width)
    assert ks_distance(area_c, area_d) < SAME
    assert ks_distance(aspect_c.log(), aspect_d.log()) < SAME
    # The recipe's ranges, on the device path itself: area 8-100 %, aspect 3/4-4/3.
    assert area_d.min() > 0.06 and area_d.max() <= 1.02
    # (whole-pixel rounding of small crops reaches a little beyond 3/4 and 4/3)
    assert aspect_d.min() > 0.6 and aspect_d.max() < 1.6
    assert abs(flip_d.float().mean() - 0.5) < 0.04
    assert abs(flip_c.float().mean() - flip_d.float().mean()) < 0.05


def test_a_wrong_crop_scale_would_be_caught():
    """The KS check has teeth: a crop scale of 20-100 % instead of 8-100 % fails it."""
    image = coordinate_image(48, 64)
    cpu_views = per_sample_outputs(finetune_transform(32), image)
    torch.manual_seed(3)
    wrong = torch.stack([v2.RandomResizedCrop(32, scale=(0.2, 1.0))(image)
                         for _ in range(SAMPLES)])  # fmt: skip
    area_c, _, _ = crop_statistics(cpu_views, 48, 64)
    area_w, _, _ = crop_statistics(wrong, 48, 64)
    assert ks_distance(area_c, area_w) > 2 * SAME


def test_images_of_different_sizes_crop_from_their_own_pixels():
    """A list of sizes is padded into one batch; no view may reach into the padding."""
    small = torch.full((3, 20, 30), 200, dtype=torch.uint8)
    large = torch.full((3, 90, 60), 100, dtype=torch.uint8)
    batch = to_device_batch([small, large] * 50, torch.device("cpu"))
    views = FinetuneView(24)(batch)
    assert views.shape == (100, 3, 24, 24)
    assert torch.allclose(views[0::2], torch.tensor(200 / 255), atol=1e-5)
    assert torch.allclose(views[1::2], torch.tensor(100 / 255), atol=1e-5)


# --- colour jitter, greyscale and blur, statistically ------------------------------------


def two_colour_image(channels: int) -> torch.Tensor:
    """Left half one colour, right half another: every jitter op changes it (contrast too)."""
    left = torch.tensor([0.8, 0.3, 0.1])[:channels, None, None].expand(channels, 8, 4)
    right = torch.tensor([0.2, 0.5, 0.9])[:channels, None, None].expand(channels, 8, 4)
    return torch.cat([left, right], dim=2).contiguous()


def colours(outputs: torch.Tensor) -> torch.Tensor:
    """(N, C, 8, 8) -> (N, 2C): the mean colour of each half."""
    return torch.cat([outputs[..., :4].mean(dim=(2, 3)), outputs[..., 4:].mean(dim=(2, 3))], 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_colour_jitter_matches_the_per_sample_path(device, channels, strength):
    image = two_colour_image(channels)
    cpu = colours(per_sample_outputs(color_distortion(strength), image))

    def ours(batch):
        return color_jitter(batch, sample_color_jitter(len(batch), strength))

    dev = colours(device_outputs(ours, image, device))
    for column in range(cpu.shape[1]):
        assert ks_distance(cpu[:, column], dev[:, column]) < SAME, column
    # p = 0.8: the fraction of untouched images is 0.2 on both sides.
    untouched_cpu = (cpu - colours(image[None])).abs().amax(1) < 1e-6
    untouched_dev = (dev - colours(image[None])).abs().amax(1) < 1e-6
    assert abs(untouched_dev.float().mean() - 0.2) < 0.03
    assert abs(untouched_cpu.float().mean() - untouched_dev.float().mean()) < 0.04


def test_a_wrong_jitter_probability_would_be_caught():
    image = two_colour_image(3)
    cpu = colours(per_sample_outputs(color_distortion(1.0), image))
    torch.manual_seed(4)
    wrong = colours(torch.stack([v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.5)(image)
                                 for _ in range(SAMPLES)]))  # fmt: skip
    assert max(ks_distance(cpu[:, c], wrong[:, c]) for c in range(6)) > 2 * SAME


@pytest.mark.parametrize("device", DEVICES)
def test_full_pretrain_views_match_on_colour_and_greyscale(device):
    """End to end on a flat colour (crop, flip and blur leave it flat): the colour each path
    produces, and how often it is grey (p 0.2 greyscale; jitter alone never makes it grey)."""
    flat = (torch.tensor([0.8, 0.3, 0.1])[:, None, None].expand(3, 40, 40) * 255).round()
    flat = flat.to(torch.uint8).contiguous()
    cpu = per_sample_outputs(pretrain_transform(40, 1.0), flat).mean(dim=(2, 3))
    views = PretrainViews(40, 1.0)

    def ours(batch):
        return torch.cat(views(to_device_batch(batch[: len(batch) // 2], torch.device(device))))

    dev = device_outputs(ours, flat, device).mean(dim=(2, 3))
    for column in range(3):
        assert ks_distance(cpu[:, column], dev[:, column]) < SAME
    grey_cpu = (cpu.amax(1) - cpu.amin(1)) < 1e-4
    grey_dev = (dev.amax(1) - dev.amin(1)) < 1e-4
    assert abs(grey_dev.float().mean() - 0.2) < 0.03
    assert abs(grey_cpu.float().mean() - grey_dev.float().mean()) < 0.04


def edge_spread(outputs: torch.Tensor) -> torch.Tensor:
    """How far a vertical black-to-white edge is smeared: sum over a row of v (1 - v)."""
    row = outputs[:, 0, outputs.shape[2] // 2]
    return (row * (1 - row)).sum(dim=1)


@pytest.mark.parametrize("device", DEVICES)
def test_blur_probability_and_sigma_match_the_per_sample_path(device):
    image = torch.zeros(1, 24, 24)
    image[..., 12:] = 1.0
    kernel = blur_kernel_size(64)
    cpu = edge_spread(per_sample_outputs(random_blur(kernel), image))
    dev = edge_spread(device_outputs(lambda b: device_random_blur(b, kernel), image, device))
    assert ks_distance(cpu, dev) < SAME
    # sigma 0.1-2.0 with p 0.5: half are sharp (spread 0), and the largest sigma spreads the
    # edge over several pixels.
    assert abs((dev < 1e-3).float().mean() - (cpu < 1e-3).float().mean()) < 0.04
    sharpest_blur = edge_spread(batch_ops.gaussian_blur(image[None], kernel, torch.tensor([2.0])))
    assert dev.max() <= sharpest_blur.max() + 1e-5
    assert dev.max() > 0.9 * sharpest_blur.max()


# --- eval, shapes and the pipeline choice -----------------------------------------------


@pytest.mark.parametrize("size,source", [(28, (28, 28)), (20, (30, 25)), (64, (80, 100)),
                                         (64, (113, 75))])  # fmt: skip
def test_eval_view_is_the_per_sample_eval_transform(size, source):
    torch.manual_seed(0)
    image = (torch.rand(3, *source) * 255).round().to(torch.uint8)
    want = eval_transform(size)(image)
    got = EvalView(size)(to_device_batch(image[None], torch.device("cpu")))[0]
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=2e-5), (got - want).abs().max()


def test_pretrain_views_shapes_range_and_independence():
    images = (torch.rand(10, 3, 50, 40) * 255).to(torch.uint8)
    a, b = PretrainViews(32, 0.5)(to_device_batch(images, torch.device("cpu")))
    assert a.shape == b.shape == (10, 3, 32, 32)
    assert a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, b)


def test_same_seed_same_views():
    images = (torch.rand(6, 1, 28, 28) * 255).to(torch.uint8)
    batch = to_device_batch(images, torch.device("cpu"))
    torch.manual_seed(5)
    first = PretrainViews(28, 0.5)(batch)
    torch.manual_seed(5)
    second = PretrainViews(28, 0.5)(batch)
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


def test_collate_stacks_equal_sizes_and_lists_mixed_ones():
    zeros, ones = torch.zeros(1, 4, 4, dtype=torch.uint8), torch.ones(1, 4, 4, dtype=torch.uint8)
    same = [(zeros, 3), (ones, 5)]
    images, labels = collate_decoded(same)
    assert images.shape == (2, 1, 4, 4) and labels.tolist() == [3, 5]
    mixed = [(torch.zeros(3, 4, 4), 0), (torch.zeros(3, 6, 5), 1)]
    images, labels = collate_decoded(mixed)
    assert isinstance(images, list) and [i.shape[1] for i in images] == [4, 6]


def test_pipeline_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_pipeline("auto", cuda)[0] == "gpu"
    assert choose_pipeline("auto", cpu)[0] == "cpu"
    assert choose_pipeline("cpu", cuda)[0] == "cpu"
    assert choose_pipeline("gpu", cpu)[0] == "gpu"
    with pytest.raises(ValueError, match=r"data\.pipeline must be cpu, gpu or auto"):
        choose_pipeline("dali", cpu)
