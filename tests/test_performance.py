"""channels_last and bf16 autocast switches run a real train step and stay accurate."""

import pytest
import torch

from simclrv2.models.resnet import EncoderConfig
from simclrv2.models.simclr_model import ContrastiveModel, ModelConfig
from simclrv2.objectives.nt_xent import nt_xent_loss
from simclrv2.performance import autocast, prepare_images, prepare_model, select_device


def _loss_and_grad(channels_last: bool, bf16: bool):
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = ContrastiveModel(ModelConfig(EncoderConfig(18, 0.25, cifar_stem=True)))
    model = prepare_model(model, device, channels_last)
    images = prepare_images(torch.rand(16, 3, 16, 16), device, channels_last)
    with autocast(device, bf16):
        projections = model(images)
        loss, _ = nt_xent_loss(projections, temperature=0.5)
    loss.backward()
    return model, projections, loss, model.encoder.stem[0].weight.grad


def test_channels_last_is_applied_to_weights_and_images():
    model, projections, _, grad = _loss_and_grad(channels_last=True, bf16=False)
    weight = model.encoder.stem[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    assert projections.dtype == torch.float32
    _, _, _, reference_grad = _loss_and_grad(False, False)
    torch.testing.assert_close(grad, reference_grad, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_computes_in_bf16_and_keeps_the_loss_in_fp32():
    _, projections, loss, grad = _loss_and_grad(channels_last=True, bf16=True)
    assert projections.dtype == torch.bfloat16
    assert loss.dtype == torch.float32
    _, _, reference_loss, reference_grad = _loss_and_grad(False, False)
    assert loss.item() == pytest.approx(reference_loss.item(), rel=0.02)
    cosine = torch.nn.functional.cosine_similarity(grad.flatten(), reference_grad.flatten(), dim=0)
    assert cosine > 0.95


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")
