"""The ResNet encoder: sizes against the paper, the reference's architectural details."""

import pytest
import torch
from torch import nn

from simclrv2.models.layers import SameMaxPool2d, ShortcutAvgPool2d
from simclrv2.models.parameter_count import count_parameters, encoder_parameter_count
from simclrv2.models.resnet import BasicBlock, BottleneckBlock, EncoderConfig, ResNet
from simclrv2.models.selective_kernel import SelectiveKernelConv2d


# The paper's figures (backbone parameters, millions): R50-1x about 24M, R152-3x+SK 795M.
@pytest.mark.parametrize(
    ("depth", "width", "sk_ratio", "millions"), [(50, 1, 0.0, 24), (152, 3, 0.0625, 795)]
)
def test_parameter_counts_match_the_paper(depth, width, sk_ratio, millions):
    count = encoder_parameter_count(EncoderConfig(depth, width, sk_ratio))
    assert round(count / 1e6) == millions


def test_exact_counts_of_the_two_reference_sizes():
    # R50-1x: torchvision's ResNet-50 without fc has exactly this many (same layers).
    assert encoder_parameter_count(EncoderConfig(50, 1)) == 23_508_032
    assert encoder_parameter_count(EncoderConfig(152, 3, 0.0625)) == 794_704_160


def test_meta_count_equals_a_real_model():
    config = EncoderConfig(18, 0.5, cifar_stem=True)
    assert encoder_parameter_count(config) == count_parameters(ResNet(config))


def test_basic_blocks_have_a_projection_in_the_first_stage_as_the_reference():
    # torchvision's ResNet-18 backbone has 11,176,512; the reference adds a 1x1 conv + BN
    # to the first block (64*64 + 2*64 parameters).
    assert encoder_parameter_count(EncoderConfig(18, 1)) == 11_176_512 + 64 * 64 + 128


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_every_depth_builds_and_runs(depth):
    config = EncoderConfig(depth, 0.25, cifar_stem=True)
    with torch.device("meta"):
        model = ResNet(config)
    expansion = 1 if depth < 50 else 4
    assert model.output_dim == 512 * 0.25 * expansion
    out = model(torch.empty(2, 3, 32, 32, device="meta"))
    assert out.shape == (2, model.output_dim)


def test_forward_shapes_real_and_grey_inputs():
    model = ResNet(EncoderConfig(50, 0.25, sk_ratio=0.0625))
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 512)
    grey = ResNet(EncoderConfig(18, 0.25, cifar_stem=True, in_channels=1))
    assert grey(torch.rand(3, 1, 28, 28)).shape == (3, 128)


def test_last_bn_of_every_block_starts_at_zero():
    model = ResNet(EncoderConfig(50, 0.25))
    blocks = [m for m in model.modules() if isinstance(m, BottleneckBlock)]
    assert len(blocks) == 16
    for block in blocks:
        assert torch.all(block.bn3.weight == 0)
        assert torch.all(block.bn1.weight == 1)
    basic = [m for m in ResNet(EncoderConfig(18, 0.25)).modules() if isinstance(m, BasicBlock)]
    assert all(torch.all(b.bn2.weight == 0) for b in basic)


def test_zero_init_makes_each_block_start_as_its_shortcut():
    model = ResNet(EncoderConfig(50, 0.25)).eval()
    block = model.stages[0][1]  # identity shortcut
    x = torch.rand(2, block.conv1.in_channels, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_sk_uses_resnet_d_stem_and_average_pool_shortcuts():
    with torch.device("meta"):
        plain = ResNet(EncoderConfig(50, 1))
        sk = ResNet(EncoderConfig(50, 1, sk_ratio=0.0625))
    plain_convs = [m for m in plain.stem if isinstance(m, nn.Conv2d)]
    sk_convs = [m for m in sk.stem if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in plain_convs] == [(7, 7)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in sk_convs] == [
        ((3, 3), (2, 2), 32),
        ((3, 3), (1, 1), 32),
        ((3, 3), (1, 1), 64),
    ]
    shortcut = sk.stages[1][0].shortcut
    assert isinstance(shortcut[0], ShortcutAvgPool2d)
    assert shortcut[1].stride == (1, 1)
    assert not any(isinstance(m, ShortcutAvgPool2d) for m in plain.modules())
    sk_convs = [m for m in sk.modules() if isinstance(m, SelectiveKernelConv2d)]
    assert len(sk_convs) == 16
    # Attention width max(C * sk_ratio, 32): 64 * 0.0625 = 4 -> 32; 512 * 0.0625 = 32.
    assert sk_convs[0].attention_reduce.out_channels == 32
    assert sk.stages[3][0].conv2.attention_reduce.out_channels == 32
    with torch.device("meta"):
        wide = ResNet(EncoderConfig(50, 3, sk_ratio=0.0625))
    assert wide.stages[3][0].conv2.attention_reduce.out_channels == 96


def test_cifar_stem_keeps_resolution():
    model = ResNet(EncoderConfig(18, 0.25, cifar_stem=True))
    conv = model.stem[0]
    assert (conv.kernel_size, conv.stride) == ((3, 3), (1, 1))
    assert not any(isinstance(m, SameMaxPool2d) for m in model.stem)
    assert model.stem(torch.rand(1, 3, 32, 32)).shape[-1] == 32
    imagenet = ResNet(EncoderConfig(18, 0.25))
    assert imagenet.stem(torch.rand(1, 3, 32, 32)).shape[-1] == 8  # /2 conv, /2 max-pool


def test_sk_conv_mixes_two_streams_with_softmax_weights():
    torch.manual_seed(0)
    sk = SelectiveKernelConv2d(4, 6, stride=1, sk_ratio=0.0625).eval()
    x = torch.rand(3, 4, 5, 5)
    out = sk(x)
    streams = torch.relu(sk.bn(sk.conv(x))).unflatten(1, (2, 6))
    # Each output lies between the two streams (a convex combination of them).
    low, high = streams.min(dim=1).values, streams.max(dim=1).values
    assert torch.all(out >= low - 1e-6) and torch.all(out <= high + 1e-6)
    assert out.shape == (3, 6, 5, 5)


def test_same_max_pool_pads_at_the_end_like_tensorflow():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # TF SAME, 3x3/2 on 4x4: windows start at 0 and 2; padding only after the last row/col.
    expected = torch.tensor([[[[10.0, 11.0], [14.0, 15.0]]]])
    torch.testing.assert_close(SameMaxPool2d(3, 2)(x), expected)
    torch.testing.assert_close(
        SameMaxPool2d(3, 2)(-x).neg(), torch.tensor([[[[0.0, 2.0], [8.0, 10.0]]]])
    )


def test_shortcut_average_pool_matches_tensorflow_same_semantics():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    stride1 = ShortcutAvgPool2d(1)(x)
    # Bottom-right corner: only the pixel itself is inside the image.
    assert stride1[0, 0, 2, 2].item() == 8.0
    assert stride1[0, 0, 0, 0].item() == (0 + 1 + 3 + 4) / 4
    assert stride1[0, 0, 2, 0].item() == (6 + 7) / 2
    stride2 = ShortcutAvgPool2d(2)(x)
    # Explicit zero padding is counted in the average (VALID pooling after padding).
    torch.testing.assert_close(stride2, torch.tensor([[[[2.0, 3.5 / 2], [13 / 4, 8 / 4]]]]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 42}, "depth 42"),
        ({"width_multiplier": 0.3}, "whole number"),
        ({"sk_ratio": 1.5}, "sk_ratio"),
        ({"in_channels": 0}, "in_channels"),
    ],
)
def test_bad_configurations_are_rejected_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EncoderConfig(**kwargs)
