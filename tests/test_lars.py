"""LARS against an independent NumPy transcription of google-research/simclr's update rule."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from simclrv2.optim.lars import LARS, lars_param_groups


def ref_lars_step(w, g, v, *, lr, momentum=0.9, wd=0.0, eeta=0.001, adapt=True, nesterov=False):
    """One classic-momentum LARS update as in tf2/lars_optimizer.py; returns (w, v, trust)."""
    w = np.asarray(w, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if wd:
        g = g + wd * w
    trust = 1.0
    if adapt:
        w_norm = np.sqrt(np.sum(w * w))
        g_norm = np.sqrt(np.sum(g * g))
        if w_norm > 0 and g_norm > 0:
            trust = eeta * w_norm / g_norm
    scaled_lr = lr * trust
    v_new = momentum * v + scaled_lr * g
    update = momentum * v_new + scaled_lr * g if nesterov else v_new
    return w - update, v_new, trust


def _run_lars(w0, grads, **kwargs):
    """Apply LARS to a float64 copy of w0 with the given gradient sequence."""
    p = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = LARS([p], **kwargs)
    history = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        history.append((p.detach().numpy().copy(), opt.state[p]["momentum_buffer"].numpy().copy()))
    return history


W0 = [[0.5, -1.0, 2.0], [0.25, 0.0, -3.0]]
G1 = [[0.1, 0.2, -0.3], [0.05, -0.4, 0.6]]
G2 = [[-0.2, 0.1, 0.05], [0.3, 0.3, -0.1]]


def test_hand_computed_single_step():
    # ||w|| = 5, ||g|| = 1: trust = 0.001 * 5 / 1 = 0.005, v = 0.005 * lr * g.
    ((w1, v1),) = _run_lars([3.0, 4.0], [[0.6, 0.8]], lr=2.0)
    np.testing.assert_allclose(v1, [0.006, 0.008], rtol=1e-12)
    np.testing.assert_allclose(w1, [2.994, 3.992], rtol=1e-12)


@pytest.mark.parametrize("wd", [0.0, 1e-4, 0.5])
@pytest.mark.parametrize("nesterov", [False, True])
def test_two_steps_match_reference(wd, nesterov):
    kwargs = {"lr": 0.7, "momentum": 0.9, "weight_decay": wd, "eeta": 0.01, "nesterov": nesterov}
    history = _run_lars(W0, [G1, G2], **kwargs)

    w, v = np.array(W0), np.zeros((2, 3))
    trusts = []
    for g, (w_got, v_got) in zip([G1, G2], history, strict=True):
        w, v, trust = ref_lars_step(
            w, g, v, lr=0.7, momentum=0.9, wd=wd, eeta=0.01, nesterov=nesterov
        )
        trusts.append(trust)
        np.testing.assert_allclose(v_got, v, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(w_got, w, rtol=1e-12, atol=1e-15)
    # The trust ratio really is in play (not 1) and differs between steps.
    assert all(t != 1.0 for t in trusts)
    assert trusts[0] != pytest.approx(trusts[1])


def test_first_step_trust_ratio_from_buffer():
    # v starts at 0, so after one step v = lr * trust * (g + wd * w).
    wd, lr, eeta = 0.1, 0.3, 0.002
    ((_, v1),) = _run_lars(W0, [G1], lr=lr, weight_decay=wd, eeta=eeta)
    g = np.array(G1) + wd * np.array(W0)
    expected_trust = eeta * np.linalg.norm(W0) / np.linalg.norm(g)
    np.testing.assert_allclose(v1 / (lr * g), expected_trust, rtol=1e-12)


def test_zero_weight_norm_gives_trust_one():
    g = [[1.0, -2.0], [0.5, 0.0]]
    ((w1, v1),) = _run_lars(np.zeros((2, 2)), [g], lr=0.1)
    np.testing.assert_allclose(v1, 0.1 * np.array(g), rtol=1e-12)
    np.testing.assert_allclose(w1, -0.1 * np.array(g), rtol=1e-12)


def test_zero_grad_gives_trust_one_and_no_nan():
    history = _run_lars(W0, [np.zeros((2, 3)), G1, np.zeros((2, 3))], lr=0.5)
    (w1, v1), (w2, v2), (w3, v3) = history
    # First step: nothing moves and nothing turns NaN.
    np.testing.assert_array_equal(v1, np.zeros((2, 3)))
    np.testing.assert_array_equal(w1, np.array(W0))
    # After a real step, a zero gradient just lets momentum carry on: v3 = 0.9 * v2.
    np.testing.assert_allclose(v3, 0.9 * v2, rtol=1e-12)
    np.testing.assert_allclose(w3, w2 - 0.9 * v2, rtol=1e-12)
    assert np.isfinite(w3).all()


def test_zero_grad_with_weight_decay_uses_decay_direction():
    wd = 0.01
    ((w1, v1),) = _run_lars(W0, [np.zeros((2, 3))], lr=1.0, weight_decay=wd)
    w_exp, v_exp, trust = ref_lars_step(W0, np.zeros((2, 3)), np.zeros((2, 3)), lr=1.0, wd=wd)
    # g = wd * w, so trust = eeta / wd.
    assert trust == pytest.approx(0.001 / wd)
    np.testing.assert_allclose(v1, v_exp, rtol=1e-12)
    np.testing.assert_allclose(w1, w_exp, rtol=1e-12)


@pytest.mark.parametrize("wd", [0.0, 1e-3])
@pytest.mark.parametrize("nesterov", [False, True])
def test_non_adapted_group_is_sgd_momentum(wd, nesterov):
    # SGD: b = m*b + g; w -= lr*b. LARS: v = m*v + lr*g; w -= v. With a constant lr, v = lr*b.
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    grads = [torch.randn(4, 5, generator=gen, dtype=torch.float64) for _ in range(6)]
    p_lars = nn.Parameter(init.clone())
    p_sgd = nn.Parameter(init.clone())
    lars = LARS(
        [{"params": [p_lars], "lars_adaptation": False, "weight_decay": wd}],
        lr=0.05,
        nesterov=nesterov,
    )
    sgd = torch.optim.SGD(
        [p_sgd], lr=0.05, momentum=0.9, dampening=0, weight_decay=wd, nesterov=nesterov
    )
    for g in grads:
        p_lars.grad = g.clone()
        p_sgd.grad = g.clone()
        lars.step()
        sgd.step()
        torch.testing.assert_close(p_lars, p_sgd, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(
            lars.state[p_lars]["momentum_buffer"],
            0.05 * sgd.state[p_sgd]["momentum_buffer"],
            rtol=1e-12,
            atol=1e-14,
        )


def test_params_without_grad_are_skipped_and_closure_returns_loss():
    a = nn.Parameter(torch.ones(3))
    b = nn.Parameter(torch.ones(3))
    opt = LARS([a, b], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (a * torch.arange(3.0)).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(3.0)
    assert b.grad is None
    torch.testing.assert_close(b.detach(), torch.ones(3))
    assert b not in opt.state
    assert not torch.equal(a.detach(), torch.ones(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_dtypes(dtype):
    p = nn.Parameter(torch.tensor(W0, dtype=dtype))
    opt = LARS([p], lr=0.7, weight_decay=1e-4, eeta=0.01)
    for g in (G1, G2):
        p.grad = torch.tensor(g, dtype=dtype)
        opt.step()
    assert p.dtype == dtype
    assert opt.state[p]["momentum_buffer"].dtype == dtype
    w, v = np.array(W0), np.zeros((2, 3))
    for g in (G1, G2):
        w, v, _ = ref_lars_step(w, g, v, lr=0.7, wd=1e-4, eeta=0.01)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    np.testing.assert_allclose(p.detach().double().numpy(), w, rtol=tol, atol=tol)


def test_half_precision_norms_do_not_overflow():
    # ||w|| = 1e5 exceeds float16's max (65504) although every entry is representable.
    p = nn.Parameter(torch.full((100,), 1e4, dtype=torch.float16))
    opt = LARS([p], lr=1.0)
    p.grad = torch.full((100,), 1.0, dtype=torch.float16)
    opt.step()
    # trust = 0.001 * 1e5 / 10 = 10, so every weight moves by 10.
    assert torch.isfinite(p).all()
    torch.testing.assert_close(
        p.detach().float(), torch.full((100,), 1e4 - 10.0), rtol=1e-3, atol=0
    )


def test_state_dict_round_trip():
    p = nn.Parameter(torch.tensor(W0, dtype=torch.float64))
    opt = LARS([p], lr=0.7, eeta=0.01)
    p.grad = torch.tensor(G1, dtype=torch.float64)
    opt.step()
    q = nn.Parameter(p.detach().clone())
    opt2 = LARS([q], lr=123.0)
    # deepcopy: load_state_dict keeps the very same buffer tensors when no cast is needed.
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt2.param_groups[0]["lr"] == 0.7
    assert opt2.param_groups[0]["eeta"] == 0.01
    p.grad = torch.tensor(G2, dtype=torch.float64)
    q.grad = torch.tensor(G2, dtype=torch.float64)
    opt.step()
    opt2.step()
    torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("key", ["lr", "momentum", "weight_decay", "eeta"])
def test_negative_hyperparameters_rejected(key):
    p = nn.Parameter(torch.ones(2))
    kwargs = {"lr": 0.1, key: -0.5}
    with pytest.raises(ValueError, match=key):
        LARS([p], **kwargs)
    # Per-group values are validated too.
    with pytest.raises(ValueError, match=key):
        LARS([{"params": [p], key: -1.0}], lr=0.1)


def test_nan_hyperparameter_rejected():
    with pytest.raises(ValueError, match="lr"):
        LARS([nn.Parameter(torch.ones(2))], lr=float("nan"))


def test_defaults():
    opt = LARS([nn.Parameter(torch.ones(2))], lr=0.1)
    group = opt.param_groups[0]
    assert group["momentum"] == 0.9
    assert group["eeta"] == 0.001
    assert group["weight_decay"] == 0.0
    assert group["nesterov"] is False
    assert group["lars_adaptation"] is True


# ---------------------------------------------------------------------------------------------
# lars_param_groups


class _MyBatchNorm(nn.BatchNorm1d):
    pass


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 8)
        self.sync_bn = nn.SyncBatchNorm(8)  # constructed only, never run
        self.custom_bn = _MyBatchNorm(8)
        self.head_supervised = nn.Sequential(nn.Linear(8, 10), nn.BatchNorm1d(10))
        self.head_supervised2 = nn.Linear(8, 2)  # shares a prefix string, not a module path
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.proj_bias = nn.Parameter(torch.zeros(3))


def _names(model, group):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return sorted(by_id[id(p)] for p in group["params"])


def test_param_group_membership():
    model = _Net()
    groups = lars_param_groups(model, weight_decay=1e-6, classifier_prefixes=("head_supervised",))
    by_name = {g["name"]: g for g in groups}
    assert [g["name"] for g in groups] == ["decay_adapt", "no_decay_no_adapt", "classifier"]

    assert _names(model, by_name["decay_adapt"]) == [
        "conv.weight",
        "fc.weight",
        "head_supervised2.weight",
    ]
    assert _names(model, by_name["no_decay_no_adapt"]) == [
        "bn.bias",
        "bn.weight",
        "custom_bn.bias",
        "custom_bn.weight",
        "fc.bias",
        "head_supervised.0.bias",
        "head_supervised.1.bias",
        "head_supervised.1.weight",
        "head_supervised2.bias",
        "proj_bias",
        "sync_bn.bias",
        "sync_bn.weight",
    ]
    assert _names(model, by_name["classifier"]) == ["head_supervised.0.weight"]

    assert by_name["decay_adapt"]["weight_decay"] == 1e-6
    assert by_name["decay_adapt"]["lars_adaptation"] is True
    assert by_name["no_decay_no_adapt"]["weight_decay"] == 0.0
    assert by_name["no_decay_no_adapt"]["lars_adaptation"] is False
    assert by_name["classifier"]["weight_decay"] == 1e-6
    assert by_name["classifier"]["lars_adaptation"] is False

    # Every trainable parameter appears exactly once; frozen ones not at all.
    all_ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(all_ids) == sorted(trainable)
    assert id(model.frozen.weight) not in all_ids


def test_param_groups_prefix_with_trailing_dot_and_nested_path():
    model = _Net()
    groups = lars_param_groups(model, 1e-4, classifier_prefixes=("head_supervised.0.",))
    by_name = {g["name"]: g for g in groups}
    assert _names(model, by_name["classifier"]) == ["head_supervised.0.weight"]


def test_empty_groups_dropped():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    groups = lars_param_groups(model, weight_decay=1e-4)
    assert [g["name"] for g in groups] == ["decay_adapt", "no_decay_no_adapt"]
    assert lars_param_groups(nn.Sequential(nn.Linear(2, 2).requires_grad_(False)), 1e-4) == []


def test_param_groups_validation():
    with pytest.raises(ValueError, match="classifier_prefixes"):
        lars_param_groups(_Net(), 1e-4, classifier_prefixes=("",))
    with pytest.raises(ValueError, match="weight_decay"):
        lars_param_groups(_Net(), -1.0)


def test_param_groups_drive_lars():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    wd, lr = 0.01, 0.2
    groups = lars_param_groups(model, wd, classifier_prefixes=("2",))
    opt = LARS(groups, lr=lr)
    before = {n: p.detach().clone().double().numpy() for n, p in model.named_parameters()}
    model(torch.randn(8, 4)).square().mean().backward()
    grads = {n: p.grad.detach().clone().double().numpy() for n, p in model.named_parameters()}
    opt.step()
    after = {n: p.detach().double().numpy() for n, p in model.named_parameters()}

    settings = {
        "0.weight": {"wd": wd, "adapt": True},
        "0.bias": {"wd": 0.0, "adapt": False},
        "1.weight": {"wd": 0.0, "adapt": False},
        "1.bias": {"wd": 0.0, "adapt": False},
        "2.weight": {"wd": wd, "adapt": False},
        "2.bias": {"wd": 0.0, "adapt": False},
    }
    for name, s in settings.items():
        w_exp, _, _ = ref_lars_step(
            before[name], grads[name], np.zeros_like(before[name]), lr=lr, **s
        )
        np.testing.assert_allclose(after[name], w_exp, rtol=1e-5, atol=1e-7, err_msg=name)


def _resnet_like(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5)
    )


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_foreach_lars_matches_the_per_tensor_loop_step_for_step(nesterov, dtype):
    models = [_resnet_like(3).to(dtype) for _ in range(2)]
    optimizers = [
        LARS(lars_param_groups(model, 1e-4, ("4",)), lr=0.3, nesterov=nesterov, foreach=foreach)
        for model, foreach in zip(models, (True, False), strict=True)
    ]
    torch.manual_seed(0)
    for _ in range(6):
        batch = torch.randn(4, 3, 6, 6, dtype=dtype)
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad()
            model(batch).float().pow(2).mean().backward()
            optimizer.step()
        fast, slow = (dict(m.named_parameters()) for m in models)
        for name in fast:
            # Same arithmetic; the norms' summation order and bf16 rounding inside fused
            # kernels may differ by one unit in the last place.
            ulp = (
                {"rtol": 1e-5, "atol": 1e-7}
                if dtype == torch.float32
                else {"rtol": 2**-7, "atol": 2**-9}
            )
            torch.testing.assert_close(fast[name], slow[name], **ulp, msg=name)
        # Step for step: both continue from the loop's state, so differences cannot compound.
        with torch.no_grad():
            for name, p in fast.items():
                p.copy_(slow[name])
                state = optimizers[0].state[p]["momentum_buffer"]
                state.copy_(optimizers[1].state[slow[name]]["momentum_buffer"])


def test_foreach_lars_updates_every_group_and_skips_params_without_grad():
    model = _resnet_like(1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = LARS(lars_param_groups(model, 1e-4, ("4",)), lr=0.1, foreach=True)
    model(torch.randn(2, 3, 6, 6)).sum().backward()
    model[4].bias.grad = None  # e.g. a frozen bias
    optimizer.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (name != "4.bias"), name


def test_a_state_dict_without_foreach_still_steps():
    model = _resnet_like(2)
    optimizer = LARS(model.parameters(), lr=0.1, foreach=True)
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        del group["foreach"]  # as written before the option existed
    optimizer.load_state_dict(state)
    model(torch.randn(2, 3, 6, 6)).sum().backward()
    optimizer.step()
    assert optimizer.state


def test_the_lars_benchmark_runs_and_compares_both_variants(capsys):
    from benchmarks.lars_step import main

    assert main(["--depth", "18", "--width", "0.125", "--steps", "1", "--rounds", "2"]) == 0
    table = capsys.readouterr().out
    assert "| loop (baseline)  |" in table and "| foreach          |" in table
    assert "1.00x" in table
