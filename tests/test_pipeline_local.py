"""The compiled pipeline's DAG run end to end with kfp.local (every component in this
environment, as SubprocessRunner does), on real Fashion-MNIST shrunk to seconds."""

import json
from pathlib import Path

import pytest
import yaml

from pipelines.compiler import load_profile
from pipelines.simclrv2_pipeline import build_pipeline

TINY_CONFIG = {
    "data": {"image_size": 28, "image_mode": "gray", "num_workers": 0, "shuffle_buffer": 64},
    "model": {"encoder": {"depth": 18, "width_multiplier": 0.125}},
    "pretrain": {"optimizer": {"batch_size": 32, "base_learning_rate": 0.075,
                               "learning_rate_scaling": "sqrt", "warmup_epochs": 0.0},
                 "temperature": 0.5},
    "finetune": {"optimizer": {"batch_size": 10}},
    "distill": {"optimizer": {"batch_size": 32, "warmup_epochs": 0.0}},
    "runtime": {"bf16": False, "log_every_steps": 4},
}  # fmt: skip


def _run(pipeline, tmp_path: Path):
    return pipeline(
        source="fashion-mnist", dataset_uri=str(tmp_path / "data"), labels_per_class=2,
        sample_limit=96, max_samples_per_shard=32, pretrain_epochs=1, pretrain_batch_size=32,
        finetune_epochs=1, distill_epochs=1, run_config=json.dumps(TINY_CONFIG),
        work_root=str(tmp_path / "work"), production=str(tmp_path / "production"),
    )  # fmt: skip


@pytest.mark.slow
def test_whole_pipeline_with_kfp_local_and_promotion_only_when_better(tmp_path):
    from kfp import local

    profile = load_profile("pipelines/profiles/tiny.yaml")
    profile["steps"]["default"]["retries"] = 0  # fail fast in a test
    profile["shard_parts"] = 2  # the ParallelFor fan-out, then the publish
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    pipeline = build_pipeline(profile)

    _run(pipeline, tmp_path)
    (run_dir,) = (tmp_path / "work").iterdir()  # one folder per run, named by its job id
    for step in ("pretrain", "finetune", "supervised", "pseudolabels", "distill", "evaluate"):
        assert (run_dir / step).is_dir(), step
    # Artifacts between steps are small typed pointers; the data stays where steps wrote it.
    (root,) = (tmp_path / "root").iterdir()
    dataset = json.loads((root / "shard-publish" / "dataset").read_text())
    assert dataset["uri"] == str(tmp_path / "data") and dataset["samples"]["labeled"] == 20
    student = json.loads((root / "distill" / "model").read_text())
    assert student["uri"] == str(run_dir / "distill" / "model.pt")
    outputs = json.loads((root / "evaluate" / "executor_output.json").read_text())
    assert "Output" in outputs["parameterValues"]
    metrics = outputs["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert {"teacher_top1", "student_top1", "supervised_top1"} <= set(metrics)
    confusion = outputs["artifacts"]["student_confusion"]["artifacts"][0]["metadata"]
    assert len(confusion["confusionMatrix"]["rows"]) == 10
    assert "data:image/png;base64," in (root / "evaluate" / "report").read_text()
    # No production model yet: the student is promoted, with a pointer to its run.
    promoted = json.loads((tmp_path / "production" / "promoted.json").read_text())
    assert promoted["run_id"] == run_dir.name and promoted["model"] == student["uri"]

    # Same inputs again: the new student ties production, so production stays as it is.
    _run(pipeline, tmp_path)
    second = next(p for p in (tmp_path / "work").iterdir() if p != run_dir)
    evaluated = json.loads((second / "evaluate" / "metrics.json").read_text())
    assert "production" in evaluated["models"]
    assert evaluated["models"]["production"]["top1"] == evaluated["models"]["student"]["top1"]
    again = json.loads((tmp_path / "production" / "promoted.json").read_text())
    assert again == promoted
    assert (
        yaml.safe_load((second / "evaluate" / "config.yaml").read_text())["run_id"] == second.name
    )
