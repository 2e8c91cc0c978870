"""Several GPUs in a step's pod: the step relaunches itself under torchrun (no GPU here, so
the device count is simulated; the torchrun path itself is tested in test_pretrain_step)."""

from pathlib import Path
from types import SimpleNamespace

import yaml

from simclrv2.config.run_config import RunConfig
from simclrv2.pipeline_support import gpu_launch


def test_one_device_runs_in_process(monkeypatch):
    monkeypatch.setattr(gpu_launch, "local_gpus", lambda: 1)
    calls = []
    uri = gpu_launch.run_step(
        "pretrain", RunConfig(), "/out", lambda: calls.append(1) or SimpleNamespace(model_uri="m")
    )
    assert uri == "m" and calls == [1]


def test_eight_gpus_launch_torchrun_with_the_same_config(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_launch, "local_gpus", lambda: 8)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    seen = {}

    def fake_run(command, check):
        assert check
        seen["command"] = command
        config_path = command[command.index("--config") + 1]
        seen["config"] = yaml.safe_load(Path(config_path).read_text())

    monkeypatch.setattr(gpu_launch.subprocess, "run", fake_run)
    config = RunConfig(run_id="r1")
    uri = gpu_launch.run_step(
        "finetune", config, "s3://b/run/finetune", lambda: 1 / 0, pretrained="s3://b/p/model.pt"
    )
    assert uri == "s3://b/run/finetune/model.pt"
    command = seen["command"]
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8"]
    assert command[command.index("simclrv2.cli") + 1] == "finetune"
    assert command[command.index("--pretrained") + 1] == "s3://b/p/model.pt"
    assert seen["config"]["run_id"] == "r1"


def test_already_under_torchrun_runs_in_process(monkeypatch):
    monkeypatch.setattr(gpu_launch, "local_gpus", lambda: 8)
    monkeypatch.setenv("WORLD_SIZE", "8")
    uri = gpu_launch.run_step("pretrain", RunConfig(), "/o", lambda: SimpleNamespace(model_uri="x"))
    assert uri == "x"
