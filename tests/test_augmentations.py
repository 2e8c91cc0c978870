"""Tests for simclrv2.data.augmentations (the SimCLRv2 reference augmentation recipe)."""

import pickle

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from simclrv2.data.augmentations import (
    TwoViews,
    blur_kernel_size,
    eval_transform,
    finetune_transform,
    pretrain_transform,
)

SIZES = [28, 32, 64, 224]
BUILDERS = {
    "pretrain": pretrain_transform,
    "finetune": finetune_transform,
    "eval": eval_transform,
}


def _tensor_image(channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, height, width), dtype=torch.uint8, generator=g)


def _as_input(image: torch.Tensor, kind: str):
    if kind == "uint8":
        return image
    if kind == "float":
        return image.float() / 255
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _find(transform: v2.Compose, kind: type) -> list:
    """All transforms of type `kind` in a Compose, including inside RandomApply."""
    found = []
    for t in transform.transforms:
        inner = t.transforms if isinstance(t, v2.RandomApply) else [t]
        found += [u for u in inner if isinstance(u, kind)]
    return found


def _random_apply_of(transform: v2.Compose, kind: type) -> v2.RandomApply:
    (wrapper,) = [
        t
        for t in transform.transforms
        if isinstance(t, v2.RandomApply) and any(isinstance(u, kind) for u in t.transforms)
    ]
    return wrapper


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", ["pil", "uint8", "float"])
def test_output_shape_dtype_range(name: str, size: int, channels: int, kind: str) -> None:
    torch.manual_seed(0)
    # Non-square input, larger than the output, so every transform must resize and square it.
    image = _as_input(_tensor_image(channels, size + 8, size + 20), kind)
    out = BUILDERS[name](size)(image)
    assert type(out) is torch.Tensor  # a plain tensor, not a tv_tensors.Image
    assert out.dtype == torch.float32
    assert out.shape == (channels, size, size)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 0.01  # not blank: the random pixels survive in some form


@pytest.mark.parametrize("channels", [1, 3])
def test_every_pretrain_step_runs_on_grey_and_rgb(channels: int) -> None:
    """Force every random op on (colour jitter, grayscale, blur) and check nothing fails."""
    transform = pretrain_transform(64)
    for t in transform.transforms:
        if hasattr(t, "p"):
            t.p = 1.0
    torch.manual_seed(0)
    image = _tensor_image(channels, 80, 72)
    for _ in range(5):
        out = transform(image)
        assert out.shape == (channels, 64, 64)
        assert out.min() >= 0.0 and out.max() <= 1.0
    if channels == 3:  # grayscale forced on: the three channels are identical
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


@pytest.mark.parametrize(("size", "kernel"), [(224, 23), (96, 9), (64, 7), (32, 3), (28, 3)])
def test_blur_kernel_size_matches_reference(size: int, kernel: int) -> None:
    assert blur_kernel_size(size) == kernel


def test_blur_kernel_is_one_for_tiny_images() -> None:
    assert blur_kernel_size(19) == 1
    assert blur_kernel_size(20) == 3


@pytest.mark.parametrize(("size", "kernel"), [(224, 23), (96, 9), (64, 7)])
def test_blur_on_by_default_for_large_images(size: int, kernel: int) -> None:
    transform = pretrain_transform(size)
    (blur,) = _find(transform, v2.GaussianBlur)
    assert tuple(blur.kernel_size) == (kernel, kernel)
    assert tuple(blur.sigma) == (0.1, 2.0)
    assert _random_apply_of(transform, v2.GaussianBlur).p == 0.5


@pytest.mark.parametrize("size", [28, 32])
def test_blur_off_by_default_for_small_images(size: int) -> None:
    assert _find(pretrain_transform(size), v2.GaussianBlur) == []


def test_blur_flag_overrides_default() -> None:
    assert _find(pretrain_transform(224, blur=False), v2.GaussianBlur) == []
    (blur,) = _find(pretrain_transform(32, blur=True), v2.GaussianBlur)
    assert tuple(blur.kernel_size) == (3, 3)
    # A 1-px kernel would be a no-op, so it is left out even when asked for.
    assert _find(pretrain_transform(16, blur=True), v2.GaussianBlur) == []


def test_no_blur_or_colour_in_finetune_and_eval() -> None:
    for transform in (finetune_transform(224), eval_transform(224)):
        assert _find(transform, v2.GaussianBlur) == []
        assert _find(transform, v2.ColorJitter) == []
        assert _find(transform, v2.RandomGrayscale) == []
    assert len(_find(finetune_transform(224), v2.RandomHorizontalFlip)) == 1
    assert _find(eval_transform(224), v2.RandomHorizontalFlip) == []


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_colour_jitter_parameters(strength: float) -> None:
    transform = pretrain_transform(224, color_jitter_strength=strength)
    (jitter,) = _find(transform, v2.ColorJitter)
    s = 0.8 * strength
    for factor in (jitter.brightness, jitter.contrast, jitter.saturation):
        assert factor == pytest.approx((1 - s, 1 + s))
    assert jitter.hue == pytest.approx((-0.2 * strength, 0.2 * strength))
    assert _random_apply_of(transform, v2.ColorJitter).p == 0.8
    (grey,) = _find(transform, v2.RandomGrayscale)
    assert grey.p == 0.2


def test_pretrain_order_matches_reference() -> None:
    types = [
        type(t.transforms[0]) if isinstance(t, v2.RandomApply) else type(t)
        for t in pretrain_transform(224).transforms
    ]
    ops = [t for t in types if t not in (v2.ToImage, v2.ToDtype, v2.ToPureTensor, v2.Lambda)]
    expected = [
        v2.RandomResizedCrop,
        v2.RandomHorizontalFlip,
        v2.ColorJitter,
        v2.RandomGrayscale,
        v2.GaussianBlur,
    ]
    assert ops == expected


@pytest.mark.parametrize("builder", [pretrain_transform, finetune_transform])
def test_random_resized_crop_parameters(builder) -> None:
    (crop,) = _find(builder(96), v2.RandomResizedCrop)
    assert tuple(crop.size) == (96, 96)
    assert tuple(crop.scale) == (0.08, 1.0)
    assert tuple(crop.ratio) == pytest.approx((3 / 4, 4 / 3))


def test_two_views_differ_and_are_reproducible() -> None:
    image = _tensor_image(3, 48, 48)
    views = TwoViews(pretrain_transform(32))
    torch.manual_seed(123)
    a1, a2 = views(image)
    torch.manual_seed(123)
    b1, b2 = views(image)
    assert a1.shape == a2.shape == (3, 32, 32)
    assert not torch.equal(a1, a2)  # two independent draws
    assert torch.equal(a1, b1) and torch.equal(a2, b2)  # same seed, same views


def test_transforms_are_picklable() -> None:
    """DataLoader workers started with spawn need to pickle the transform."""
    image = _tensor_image(3, 40, 40)
    for transform in (
        TwoViews(pretrain_transform(224)),
        finetune_transform(32),
        eval_transform(64),
    ):
        clone = pickle.loads(pickle.dumps(transform))
        torch.manual_seed(0)
        expected = transform(image)
        torch.manual_seed(0)
        got = clone(image)
        if isinstance(expected, tuple):
            assert all(torch.equal(e, g) for e, g in zip(expected, got, strict=True))
        else:
            assert torch.equal(expected, got)


def test_eval_is_deterministic() -> None:
    image = _tensor_image(3, 300, 260)
    transform = eval_transform(224)
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(1)
    assert torch.equal(first, transform(image))


def test_eval_resize_then_centre_crop_sizes() -> None:
    (resize,) = _find(eval_transform(224), v2.Resize)
    assert resize.size == [256]  # 224 / 0.875: shorter side, aspect preserved
    (crop,) = _find(eval_transform(224), v2.CenterCrop)
    assert tuple(crop.size) == (224, 224)
    assert _find(eval_transform(32), v2.CenterCrop) == []


def test_eval_crops_away_the_border_for_large_images() -> None:
    # Red 10-px frame around a green 280 px square; resized to 256 the frame is ~8.5 px, inside
    # the 16 px that the 224 centre crop removes on each side.
    image = torch.zeros(3, 300, 300, dtype=torch.uint8)
    image[0] = 255
    image[:, 10:-10, 10:-10] = torch.tensor([0, 255, 0], dtype=torch.uint8)[:, None, None]
    out = eval_transform(224)(Image.fromarray(image.permute(1, 2, 0).numpy()))
    assert out.shape == (3, 224, 224)
    green = torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand_as(out)
    torch.testing.assert_close(out, green, atol=1e-3, rtol=0)


def test_eval_small_images_are_not_cropped() -> None:
    image = _tensor_image(3, 32, 32)
    torch.testing.assert_close(eval_transform(32)(image), image.float() / 255, atol=1e-6, rtol=0)
    # A float input keeps its values (no rescaling of data that is already in [0, 1]).
    as_float = image.float() / 255
    torch.testing.assert_close(eval_transform(32)(as_float), as_float, atol=0, rtol=0)
    # Grey 28 px (Fashion-MNIST) upsampled to 32: whole image kept, only resized.
    grey = torch.zeros(1, 28, 28, dtype=torch.uint8)
    grey[:, :, 0] = 255  # a white left column survives, since nothing is cropped
    out = eval_transform(32)(Image.fromarray(grey[0].numpy()))
    assert out.shape == (1, 32, 32)
    assert out[0, :, 0].min() > 0.9


def test_grayscale_fraction_is_about_one_fifth() -> None:
    # Coloured input; colour jitter never makes the channels equal (saturation factor >= 0.2),
    # so identical channels mean RandomGrayscale fired.
    g = torch.Generator().manual_seed(0)
    image = (0.3 + 0.4 * torch.rand(3, 32, 32, generator=g)).mul(255).to(torch.uint8)
    transform = pretrain_transform(32)
    torch.manual_seed(0)
    n = 400
    grey = 0
    for _ in range(n):
        out = transform(image)
        grey += bool(torch.equal(out[0], out[1]) and torch.equal(out[1], out[2]))
    assert abs(grey / n - 0.2) < 0.06


def test_horizontal_flip_about_half_the_time() -> None:
    # A left-to-right ramp stays increasing after any crop, and decreasing only when flipped.
    ramp = torch.linspace(0, 1, 64).expand(3, 64, 64).contiguous()
    transform = finetune_transform(32)
    torch.manual_seed(0)
    n = 400
    flipped = 0
    for _ in range(n):
        out = transform(ramp)
        flipped += bool(out[:, :, 0].mean() > out[:, :, -1].mean())
    assert abs(flipped / n - 0.5) < 0.08


def test_colour_jitter_is_applied_about_eight_tenths() -> None:
    # Jitter alone (no crop or flip): unchanged output means RandomApply skipped it.
    transform = pretrain_transform(32)
    jitter = _random_apply_of(transform, v2.ColorJitter)
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    n = 400
    applied = sum(not torch.equal(jitter(image), image) for _ in range(n))
    assert abs(applied / n - 0.8) < 0.06


def test_pil_and_tensor_inputs_give_the_same_result() -> None:
    image = _tensor_image(3, 40, 40)
    transform = pretrain_transform(32)
    torch.manual_seed(5)
    from_tensor = transform(image)
    torch.manual_seed(5)
    from_pil = transform(_as_input(image, "pil"))
    torch.testing.assert_close(from_tensor, from_pil, atol=0, rtol=0)
