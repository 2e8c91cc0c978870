"""Step budgets sized to the data (simclrv2/training/step_budget.py), and the steps using them."""

import pytest

from simclrv2.config.run_config import OptimizerSettings
from simclrv2.training.step_budget import plan_budget


def test_the_issue_case_runs_enough_distillation_steps():
    # 4,000 images, 1 epoch at batch 256 was 16 steps; a minimum of 500 raises the steps.
    settings = OptimizerSettings(epochs=1, batch_size=256, warmup_epochs=0.1, min_steps=500)
    budget = plan_budget("distill", 4000, settings)
    assert budget.steps_per_epoch == 15
    assert budget.total_steps == 500 and budget.epochs == 34  # 34 passes, the last cut short
    assert budget.warmup_steps == 50  # warmup keeps its tenth of the run
    (reason,) = budget.reasons
    assert "4,000 images: 1 epoch(s) = 16 steps < minimum 500" in reason
    assert "running 500 steps" in reason
    text = budget.describe("distill", 4000)
    assert "500 steps (34 passes of 15 steps), warmup 50 steps" in text


def test_a_large_dataset_keeps_the_configured_recipe():
    settings = OptimizerSettings(epochs=100, batch_size=4096, warmup_epochs=10, min_steps=500)
    budget = plan_budget("pretrain", 1_281_167, settings)
    assert (budget.batch_size, budget.reasons) == (4096, ())
    # The reference's counts (tf2/model_util.py): N x E // B + 1 and warmup_epochs x N // B,
    # not whole epochs of N // B (100 x 312 = 31,200 and 3,120).
    assert budget.total_steps == 1_281_167 * 100 // 4096 + 1 == 31_279
    assert budget.warmup_steps == 10 * 1_281_167 // 4096 == 3_127
    assert budget.epochs == 101  # passes of 312 steps; the 101st runs 79


def test_small_data_counts_every_image_as_the_reference_does():
    # 600 labels at batch 64 for 60 epochs: 563 steps, not 60 x 9 = 540 (4% fewer).
    settings = OptimizerSettings(epochs=60, batch_size=64, warmup_epochs=2.5)
    budget = plan_budget("finetune", 600, settings)
    assert budget.total_steps == 563 and budget.steps_per_epoch == 9 and budget.epochs == 63
    assert budget.warmup_steps == 23  # 2.5 x 600 // 64 = 23.4 -> 23


def test_batch_is_capped_by_the_split_and_follows_the_world_size():
    settings = OptimizerSettings(epochs=60, batch_size=1024, warmup_epochs=0)
    budget = plan_budget("finetune", 130, settings, world_size=4)
    assert budget.batch_size == 128 and budget.steps_per_epoch == 1
    assert "130 images are fewer than the batch of 1024: batch 128" in budget.reasons[0]
    assert budget.total_steps == 130 * 60 // 128 + 1 == 61


def test_warmup_steps_override_warmup_epochs_and_stay_within_the_run():
    settings = OptimizerSettings(epochs=2, batch_size=10, warmup_epochs=1, warmup_steps=7)
    assert plan_budget("pretrain", 100, settings).warmup_steps == 7
    settings = OptimizerSettings(epochs=1, batch_size=10, warmup_epochs=0, warmup_steps=70)
    assert plan_budget("pretrain", 100, settings).warmup_steps == 11  # all 11 steps


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
    assert "(finetune.optimizer.min_steps), running 500 steps" in budget.reasons[0]
