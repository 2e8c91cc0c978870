"""The compiled pipeline's DAG run end to end with kfp.local (every component in this
environment, as SubprocessRunner does), on real Fashion-MNIST shrunk to seconds."""

import json

import pytest
import yaml

from pipelines.compiler import load_profile

PARAMS = [
    "labels_per_class=2", "sample_limit=96", "max_samples_per_shard=32", "pretrain_epochs=1",
    "pretrain_batch_size=32", "finetune_epochs=1", "distill_epochs=1",
]  # fmt: skip
CONFIG = [
    "data.num_workers=0", "data.shuffle_buffer=64", "model.encoder.width_multiplier=0.125",
    "pretrain.optimizer.batch_size=32", "pretrain.optimizer.warmup_epochs=0.0",
    "finetune.optimizer.batch_size=10", "distill.optimizer.batch_size=32",
    "distill.optimizer.warmup_epochs=0.0", "runtime.bf16=false",
    # The tiny profile's step floors (400/500/200) are for real datasets; 96 images need a
    # few steps to exercise the pipeline.
    "pretrain.optimizer.min_steps=0", "finetune.optimizer.min_steps=0",
    "distill.optimizer.min_steps=0",
    # The supervised baseline's own recipe, shrunk the same way.
    "supervised.optimizer.epochs=1", "supervised.optimizer.batch_size=10",
    "supervised.optimizer.warmup_epochs=0.0", "supervised.optimizer.min_steps=0",
    # Seconds of training make weak models; these tests are about the pipeline's mechanics,
    # so the promotion gate only compares with production (its rules: test_promotion_gate.py).
    "promotion.max_below_teacher=1.0", "promotion.min_above_supervised=-1.0",
    "promotion.min_above_chance=-1.0",
]  # fmt: skip


def tiny_pipeline_command(
    tmp_path, runner: str, *options: str, shard_parts: int = 1, nodes: dict | None = None
) -> list:
    """`simclrv2 pipeline <runner>` arguments for the tiny profile shrunk to seconds;
    nodes: {step: node count} for multi-node steps."""
    profile = load_profile("pipelines/profiles/tiny.yaml")
    profile["steps"]["default"]["retries"] = 0  # fail fast in a test
    if shard_parts > 1:
        profile["shard_parts"] = shard_parts
    for step, count in (nodes or {}).items():
        profile["steps"].setdefault(step, {})["nodes"] = count
    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    command = ["pipeline", runner, "--profile", str(profile_path), *options]
    for param in PARAMS:
        command += ["--param", param]
    for setting in CONFIG:
        command += ["--set", setting]
    return command


@pytest.mark.slow
def test_whole_pipeline_with_kfp_local_and_promotion_only_when_better(tmp_path, capsys):
    from simclrv2.cli import main

    out = tmp_path / "out"
    # shard_parts 2: the ParallelFor fan-out, then the publish.
    command = tiny_pipeline_command(tmp_path, "run-local", "--output", str(out), shard_parts=2)

    assert main(command) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "kfp.local run finished" in printed and "supervised" in printed
    # The profile's cluster addresses are not used on this machine.
    assert "pushgateway.simclrv2" not in printed + captured.err
    (run_dir,) = (out / "work").iterdir()  # one folder per run, named by its job id
    for step in ("pretrain", "finetune", "supervised", "pseudolabels", "distill", "evaluate"):
        assert (run_dir / step).is_dir(), step
    # Artifacts between steps are small typed pointers; the data stays where steps wrote it.
    (root,) = (out / "kfp-root").iterdir()
    dataset = json.loads((root / "shard-publish" / "dataset").read_text())
    # Published as a content-addressed version under the dataset base.
    assert dataset["uri"] == str(out / "data" / f"v-{dataset['fingerprint'][:16]}")
    assert dataset["samples"]["labeled"] == 20
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
    promoted = json.loads((out / "production" / "promoted.json").read_text())
    assert promoted["run_id"] == run_dir.name and promoted["model"] == student["uri"]
    # The gate's decision: in the KFP UI (Markdown) and beside the evaluation.
    assert "Promoted: the student" in (root / "evaluate" / "decision").read_text()
    decision = json.loads((run_dir / "evaluate" / "decision.json").read_text())
    assert decision["promote"] and decision["candidate"] == "student"

    # Same inputs again: the new student ties production, so production stays as it is.
    assert main(command) == 0
    second = next(p for p in (out / "work").iterdir() if p != run_dir)
    evaluated = json.loads((second / "evaluate" / "metrics.json").read_text())
    assert "production" in evaluated["models"]
    assert evaluated["models"]["production"]["top1"] == evaluated["models"]["student"]["top1"]
    again = json.loads((out / "production" / "promoted.json").read_text())
    assert again == promoted
    decision = json.loads((second / "evaluate" / "decision.json").read_text())
    assert not decision["promote"] and "beats_production" in decision["reason"]
    assert (
        yaml.safe_load((second / "evaluate" / "config.yaml").read_text())["run_id"] == second.name
    )


@pytest.mark.slow
@pytest.mark.distributed
def test_the_pipeline_with_two_node_steps_runs_through_the_launcher(tmp_path, capsys):
    """The tiny profile with pretrain and distill on 2 nodes: each task launches a TrainJob
    that the local-process backend runs as 2 torchrun "nodes" (PET_* rendezvous, gloo)."""
    from simclrv2.cli import main

    out = tmp_path / "out"
    command = tiny_pipeline_command(tmp_path, "run-local", "--output", str(out),
                                    nodes={"pretrain": 2, "distill": 2})  # fmt: skip
    assert main(command) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "pretrain runs on 2 nodes" in printed and "distill runs on 2 nodes" in printed
    for step in ("pretrain", "distill"):
        assert f"[{step}] TrainJob simclrv2-{step}-" in printed, step
        assert "world size 2" in printed
    assert "[node 0] [pretrain]" in printed  # node 0's log in the launcher's
    (run_dir,) = (out / "work").iterdir()
    for step in ("pretrain", "distill"):
        config = yaml.safe_load((run_dir / step / "launch" / "run.yaml").read_text())
        assert config["run_id"] == run_dir.name
        assert (run_dir / step / "model.pt").is_file()
    assert json.loads((out / "production" / "promoted.json").read_text())["run_id"] == run_dir.name
