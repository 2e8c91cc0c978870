"""runtime.compile: the compiled model trains like the eager one, and saves the same keys."""

import dataclasses

import pytest
import torch

from simclrv2.config.loading import from_dict
from simclrv2.config.run_config import RunConfig
from simclrv2.distributed.context import DistributedContext
from simclrv2.optim.lars import LARS, lars_param_groups
from simclrv2.steps.pretrain import build_pretrain_model, contrastive_step
from simclrv2.steps.training_setup import place_model
from tests.test_pretrain_step import TINY


def _three_steps(compile_model: bool) -> tuple[list[float], dict]:
    torch._dynamo.reset()
    config = from_dict(RunConfig, TINY)
    runtime = dataclasses.replace(config.runtime, compile=compile_model)
    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    model = place_model(build_pretrain_model(config), context, runtime)
    assert (getattr(model, "_compiled_call_impl", None) is not None) == compile_model
    optimizer = LARS(lars_param_groups(model, 1e-4), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(3)
    losses = []
    for _ in range(3):
        view_a, view_b = torch.rand(2, 16, 1, 28, 28, generator=generator)
        loss, _, _ = contrastive_step(model, view_a, view_b, 0.5, context, False, False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_compiled_model_gives_the_eager_losses_and_weights():
    eager_losses, eager_state = _three_steps(False)
    compiled_losses, compiled_state = _three_steps(True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert list(compiled_state) == list(eager_state)  # no "_orig_mod." prefix
    # Inductor fuses and reorders float arithmetic: equal within float32 rounding, not bits.
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-4, atol=1e-4)
    for name, value in eager_state.items():
        torch.testing.assert_close(compiled_state[name], value, rtol=1e-3, atol=1e-4, msg=name)
