"""The pretrain step: resumable after SIGKILL, equal across 1 and 2 processes, torchrun."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from simclrv2.config.loading import from_dict
from simclrv2.config.run_config import RunConfig
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.distributed.context import init_distributed
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset
from simclrv2.steps.model_artifact import load_model
from simclrv2.steps.pretrain import build_pretrain_model, contrastive_step
from simclrv2.steps.training_setup import make_optimizer, place_model
from simclrv2.storage.object_store import ObjectStore
from simclrv2.training.step_budget import plan_budget
from tests.multiprocess import free_port, run_on_ranks

TINY = {
    "data": {"image_size": 28, "image_mode": "gray", "num_workers": 2, "shuffle_buffer": 64},
    "model": {"encoder": {"depth": 18, "width_multiplier": 0.125}},
    "pretrain": {
        "optimizer": {"epochs": 2, "batch_size": 32, "base_learning_rate": 0.075,
                      "learning_rate_scaling": "sqrt", "warmup_epochs": 0.5,
                      "weight_decay": 1e-4},
        "temperature": 0.5,
        "color_jitter_strength": 0.5,
    },
    "runtime": {"checkpoint_every_steps": 4, "log_every_steps": 2, "bf16": False,
                "channels_last": False},
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fmnist")
    request = ShardRequest("fashion-mnist", str(folder), LabelSubsetSpec(per_class=2),
                           max_samples_per_shard=48, sample_limit=192)  # fmt: skip
    shard_dataset(request)
    return folder


def _run_cli(dataset: Path, output: Path, config: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "simclrv2.cli", "pretrain", "--config", str(config),
               "--dataset", str(dataset), "--output", str(output), *extra]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _config_file(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.mark.slow
def test_sigkilled_run_resumes_and_ends_with_the_same_weights(tiny_dataset, tmp_path):
    config = _config_file(tmp_path)
    # 192 images / 32 = 6 steps per pass; 192 x 2 // 32 + 1 = 13 steps (the reference's
    # count), the third pass cut short after one; checkpoints at 4, 8, 12, 13.
    straight = _run_cli(tiny_dataset, tmp_path / "straight", config)
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    killed_out = tmp_path / "killed"
    victim = _run_cli(tiny_dataset, killed_out, config)
    checkpoint = killed_out / "checkpoints" / "step-000000004.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert victim.poll() is None, victim.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (killed_out / "model.pt").exists()

    resumed = _run_cli(tiny_dataset, killed_out, config)
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    assert "resuming from" in log and "step 4, epoch 0, batch 4" in log

    store = ObjectStore()
    expected, _ = load_model(store, str(tmp_path / "straight" / "model.pt"))
    got, metadata = load_model(store, str(killed_out / "model.pt"))
    assert metadata["steps"] == 13
    for (name, a), (_, b) in zip(
        expected.state_dict().items(), got.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def _first_step(rank: int, world_size: int, images_a, images_b) -> dict:
    config = from_dict(RunConfig, TINY)
    context = init_distributed("cpu")
    assert context.world_size == world_size
    model = place_model(build_pretrain_model(config), context, config.runtime)
    settings = config.pretrain.optimizer
    budget = plan_budget("pretrain", 10 * settings.batch_size, settings, world_size)
    optimizer, _, _ = make_optimizer(model, settings, budget)
    optimizer.param_groups[0]["lr"] = 0.1  # warmup would make the first step a no-op
    per_rank = len(images_a) // world_size
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    loss, _, _ = contrastive_step(model, images_a[rows], images_b[rows], 0.5, context, False, False)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    module = getattr(model, "module", model)
    return {
        "loss": loss.detach(),
        "params": {k: v.detach() for k, v in module.state_dict().items()},
    }


@pytest.mark.distributed
def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    torch.manual_seed(5)
    images_a, images_b = torch.rand(2, 16, 1, 28, 28)
    single = _first_step(0, 1, images_a, images_b)
    ranks = run_on_ranks(_first_step, 2, tmp_path, images_a, images_b)
    mean_loss = (ranks[0]["loss"] + ranks[1]["loss"]) / 2
    torch.testing.assert_close(mean_loss, single["loss"], rtol=1e-5, atol=1e-5)
    for name, value in single["params"].items():
        if name.endswith("num_batches_tracked"):
            continue
        for rank in ranks:  # every rank holds the weights one process computed
            torch.testing.assert_close(rank["params"][name], value, rtol=1e-4, atol=1e-5,
                                       msg=name)  # fmt: skip


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_processes_end_to_end(tiny_dataset, tmp_path):
    config = _config_file(tmp_path)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), "-m", "simclrv2.cli", "pretrain",
               "--config", str(config), "--dataset", str(tiny_dataset),
               "--output", str(tmp_path / "out"), "--max-steps", "3"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 process(es)" in done.stdout
    assert done.stdout.count("[pretrain] effective config") == 1  # rank 0 only
    _, metadata = load_model(ObjectStore(), str(tmp_path / "out" / "model.pt"))
    assert metadata["steps"] == 3


@pytest.mark.slow
def test_knn_monitor_records_each_epoch_and_changes_no_weight(tiny_dataset, tmp_path):
    """pretrain.knn.every_epochs=1: a kNN top-1 per epoch in the history, the metric and the
    curves; and the monitor leaves training untouched (same weights as without it)."""
    import json

    from simclrv2.steps.pretrain import pretrain

    outputs = {}
    for every in (0, 1):
        knn = {"every_epochs": every, "k": 5}
        settings = {**TINY, "data": {**TINY["data"], "dataset": str(tiny_dataset)},
                    "pretrain": {**TINY["pretrain"], "knn": knn}}  # fmt: skip
        config = from_dict(RunConfig, settings)
        output = tmp_path / f"knn-{every}"
        lines = []
        pretrain(config, str(output), print_fn=lines.append)
        outputs[every] = output
    said = [line.split(":")[0] for line in lines if "kNN top-1" in line]
    assert said == ["[pretrain] epoch 1", "[pretrain] epoch 2", "[pretrain] end of training"]
    history = json.loads((outputs[1] / "history.json").read_text())
    knn = [(r["step"], r["knn_top1"]) for r in history if "knn_top1" in r]
    # After each whole pass (6 steps) and at the last step, which ends the short third pass:
    # the final weights are measured too.
    assert [step for step, _ in knn] == [6, 12, 13]
    assert all(0.0 <= value <= 1.0 for _, value in knn)
    assert not any("knn_top1" in r for r in json.loads((outputs[0] / "history.json").read_text()))
    store = ObjectStore()
    with_monitor, _ = load_model(store, str(outputs[1] / "model.pt"))
    without, _ = load_model(store, str(outputs[0] / "model.pt"))
    for (name, a), (_, b) in zip(with_monitor.state_dict().items(),
                                 without.state_dict().items(), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
