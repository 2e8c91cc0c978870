"""The supervised baseline trains with its own from-scratch recipe (the `supervised` section),
not with fine-tuning's optimizer and schedule (simclrv2/steps/finetune.py)."""

import pytest
import torch

from simclrv2.config.loading import from_dict
from simclrv2.config.run_config import OptimizerSettings, RunConfig
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.models.simclr_model import Classifier
from simclrv2.optim.lars import LARS
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset
from simclrv2.steps.finetune import finetune
from simclrv2.steps.training_setup import make_optimizer
from simclrv2.training.checkpoint import CheckpointStore
from simclrv2.training.step_budget import plan_budget

# fmt: off
SETTINGS = {
    "data": {"image_size": 28, "image_mode": "gray", "num_workers": 0, "shuffle_buffer": 8},
    "model": {"encoder": {"depth": 18, "width_multiplier": 0.125}},
    # Fine-tuning's recipe: if the baseline used it, it would run 20 x 1 // 10 + 1 = 3 steps.
    "finetune": {"optimizer": {"epochs": 1, "batch_size": 10}, "from_scratch": True},
    "supervised": {"optimizer": {"epochs": 2, "batch_size": 4, "base_learning_rate": 0.2,
                                 "warmup_epochs": 0.4, "weight_decay": 5e-4,
                                 "min_steps": 0}},
    "runtime": {"bf16": False, "channels_last": False, "device": "cpu",
                "checkpoint_every_steps": 100, "log_every_steps": 5},
}
# fmt: on


@pytest.fixture(scope="module")
def labeled_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fmnist")
    request = ShardRequest("fashion-mnist", str(folder), LabelSubsetSpec(per_class=2),
                           max_samples_per_shard=48, sample_limit=64)  # fmt: skip
    shard_dataset(request)
    return folder


def test_the_baseline_runs_the_supervised_budget_with_sgd_and_nesterov(labeled_dataset, tmp_path):
    data = {**SETTINGS["data"], "dataset": str(labeled_dataset)}
    config = from_dict(RunConfig, {**SETTINGS, "data": data})
    printed = []
    result = finetune(config, str(tmp_path / "supervised"), print_fn=printed.append)
    # 20 labels x 2 epochs // 4 + 1 = 11 steps: the supervised section's, not fine-tuning's 3.
    assert result.steps == 11
    assert any("[supervised] budget: 20 images, global batch 4, 11 steps" in p for p in printed)
    store = CheckpointStore(str(tmp_path / "supervised" / "checkpoints"))
    state = store.load()
    (group,) = state["optimizer"]["param_groups"]  # SGD: one group, decay on every parameter
    assert group["nesterov"] is True and group["momentum"] == 0.9
    assert group["weight_decay"] == 5e-4
    # Linear scaling at batch 4: 0.2 x 4 / 256; warmup 0.4 x 20 // 4 = 2 steps, then cosine.
    rates = [r["learning_rate"] for r in state["history"]]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(0.2 * 4 / 256 / 2)
    assert max(rates) == pytest.approx(0.2 * 4 / 256) and rates[-1] < rates[2]


def test_lars_stays_available_for_the_baseline_and_unknown_algorithms_are_refused():
    model = Classifier(from_dict(RunConfig, SETTINGS).model.encoder.encoder_config(
        from_dict(RunConfig, SETTINGS).data), 10, 0, 3, zero_init_classifier=False)  # fmt: skip
    settings = OptimizerSettings(epochs=1, batch_size=8, warmup_epochs=0)
    budget = plan_budget("supervised", 64, settings)
    optimizer, _, _ = make_optimizer(model, settings, budget, algorithm="lars")
    assert isinstance(optimizer, LARS)
    optimizer, _, _ = make_optimizer(model, settings, budget, algorithm="sgd")
    assert type(optimizer) is torch.optim.SGD
    with pytest.raises(ValueError, match=r"supervised\.algorithm: 'adam' is not one of"):
        from_dict(RunConfig, {"supervised": {"algorithm": "adam"}})
