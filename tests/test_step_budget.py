"""Step budgets sized to the data (simclrv2/training/step_budget.py), and the steps using them."""

import pytest

from simclrv2.config.run_config import OptimizerSettings
from simclrv2.training.step_budget import plan_budget


def test_the_issue_case_runs_enough_distillation_steps():
    # 4,000 images, 1 epoch at batch 256 was 15 steps; a minimum of 500 raises the epochs.
    settings = OptimizerSettings(epochs=1, batch_size=256, warmup_epochs=0.1, min_steps=500)
    budget = plan_budget("distill", 4000, settings)
    assert budget.steps_per_epoch == 15
    assert budget.epochs == 34 and budget.total_steps == 510
    assert budget.warmup_steps == 51  # warmup keeps its tenth of the run
    (reason,) = budget.reasons
    assert "4,000 images: 1 epoch(s) = 15 steps < minimum 500" in reason
    assert "running 34 epochs" in reason
    text = budget.describe("distill", 4000)
    assert "15 steps/epoch x 34 epochs = 510 steps, warmup 51 steps" in text


def test_a_large_dataset_keeps_the_configured_recipe():
    settings = OptimizerSettings(epochs=100, batch_size=4096, warmup_epochs=10, min_steps=500)
    budget = plan_budget("pretrain", 1_281_167, settings)
    assert (budget.batch_size, budget.epochs, budget.reasons) == (4096, 100, ())
    assert budget.total_steps == 100 * 312
    assert budget.warmup_steps == 10 * 312


def test_batch_is_capped_by_the_split_and_follows_the_world_size():
    settings = OptimizerSettings(epochs=60, batch_size=1024, warmup_epochs=0)
    budget = plan_budget("finetune", 130, settings, world_size=4)
    assert budget.batch_size == 128 and budget.steps_per_epoch == 1
    assert "130 images are fewer than the batch of 1024: batch 128" in budget.reasons[0]
    assert budget.total_steps == 60


def test_warmup_steps_override_warmup_epochs_and_stay_within_the_run():
    settings = OptimizerSettings(epochs=2, batch_size=10, warmup_epochs=1, warmup_steps=7)
    assert plan_budget("pretrain", 100, settings).warmup_steps == 7
    settings = OptimizerSettings(epochs=1, batch_size=10, warmup_epochs=0, warmup_steps=70)
    assert plan_budget("pretrain", 100, settings).warmup_steps == 10


def test_fewer_images_than_processes_is_refused():
    with pytest.raises(ValueError, match="3 training images cannot be split over 4 processes"):
        plan_budget("finetune", 3, OptimizerSettings(batch_size=8), world_size=4)


def test_negative_minimums_are_refused():
    with pytest.raises(ValueError, match=r"optimizer\.min_steps must be >= 0"):
        OptimizerSettings(min_steps=-1)
    with pytest.raises(ValueError, match=r"optimizer\.warmup_steps must be >= 0"):
        OptimizerSettings(warmup_steps=-5)


def test_the_supervised_baseline_names_the_section_it_is_configured_in():
    settings = OptimizerSettings(epochs=60, batch_size=64, warmup_epochs=0, min_steps=500)
    budget = plan_budget("supervised", 200, settings, section="finetune")
    assert "(finetune.optimizer.min_steps), running 167 epochs" in budget.reasons[0]
