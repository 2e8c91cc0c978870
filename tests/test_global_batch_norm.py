"""Global BN: statistics over all processes equal BN over the concatenated batch."""

import pytest
import torch
from torch import nn

from simclrv2.distributed.global_batch_norm import GlobalBatchNorm, convert_to_global_batch_norm
from simclrv2.models.resnet import EncoderConfig
from simclrv2.models.simclr_model import ContrastiveModel, ModelConfig
from tests.multiprocess import run_on_ranks


def _reference_bn(channels: int) -> nn.BatchNorm2d:
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def _global_bn_step(rank: int, world_size: int, x: torch.Tensor, upstream: torch.Tensor):
    bn = convert_to_global_batch_norm(_reference_bn(x.shape[1]))
    assert isinstance(bn, GlobalBatchNorm)
    rows = slice(rank * len(x) // world_size, (rank + 1) * len(x) // world_size)
    local = x[rows].clone().requires_grad_(True)
    out = bn(local)
    # DDP averages parameter gradients over ranks; scale the local loss the same way.
    (out * upstream[rows]).sum().backward()
    return {
        "out": out.detach(),
        "input_grad": local.grad,
        "weight_grad": bn.weight.grad,
        "bias_grad": bn.bias.grad,
        "running_mean": bn.running_mean,
        "running_var": bn.running_var,
    }


@pytest.mark.distributed
def test_two_process_global_bn_equals_full_batch_bn(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5, dtype=torch.float64) * 3 + 10  # large mean: tests stability
    upstream = torch.randn_like(x)
    results = run_on_ranks(_global_bn_step, 2, tmp_path, x.float(), upstream.float())

    bn = _reference_bn(3)
    full = x.float().clone().requires_grad_(True)
    out = bn(full)
    (out * upstream.float()).sum().backward()

    torch.testing.assert_close(torch.cat([r["out"] for r in results]), out.detach())
    torch.testing.assert_close(torch.cat([r["input_grad"] for r in results]), full.grad)
    summed_weight_grad = sum(r["weight_grad"] for r in results)
    torch.testing.assert_close(summed_weight_grad, bn.weight.grad)
    torch.testing.assert_close(sum(r["bias_grad"] for r in results), bn.bias.grad)
    for result in results:
        torch.testing.assert_close(result["running_mean"], bn.running_mean)
        torch.testing.assert_close(result["running_var"], bn.running_var)


def test_single_process_and_eval_behave_as_plain_batch_norm():
    reference = _reference_bn(3)
    converted = convert_to_global_batch_norm(_reference_bn(3))
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(converted(x), reference(x))
    torch.testing.assert_close(converted.running_var, reference.running_var)
    converted.eval(), reference.eval()
    torch.testing.assert_close(converted(x), reference(x))


def test_conversion_keeps_weights_stats_and_missing_beta():
    torch.manual_seed(0)
    model = ContrastiveModel(ModelConfig(EncoderConfig(18, 0.25, cifar_stem=True)))
    model.train()(torch.rand(4, 3, 16, 16))  # non-trivial running statistics
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bn_count = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    model = convert_to_global_batch_norm(model)
    assert sum(isinstance(m, GlobalBatchNorm) for m in model.modules()) == bn_count
    assert model.projection_head.layers[-1].bn.bias is None
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])
    model.eval()
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 128)
