"""torchrun, two processes, one of them killed with SIGKILL: the restarted job resumes.

The second process (rank 1) of a real `torchrun --nproc_per_node 2` pretraining job is killed
once a checkpoint is sealed; torchrun stops the job and fails. Nothing looks finished (no
model), every sealed checkpoint passes its content check, and a restarted torchrun job
resumes from the newest checkpoint (the one every rank agreed on, said in its log) and ends
with the full number of steps. Which checkpoint ranks agree on when they disagree is tested
in tests/test_checkpoint_fallback.py.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset
from simclrv2.steps.model_artifact import load_model
from simclrv2.storage.object_store import ObjectStore
from simclrv2.training.checkpoint import CheckpointStore
from tests.multiprocess import free_port
from tests.test_preemption import SETTINGS

pytestmark = [pytest.mark.distributed, pytest.mark.faults, pytest.mark.slow]


def _torchrun(config: Path, data: Path, output: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), "-m", "simclrv2.cli", "pretrain",
               "--config", str(config), "--dataset", str(data),
               "--output", str(output)]  # fmt: skip
    with log.open("w") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)


def _rank_process(launcher: int, rank: int) -> int | None:
    """The pid of the worker torchrun started as `rank`, once it is running."""
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except (FileNotFoundError, ProcessLookupError):
                continue
            if f"RANK={rank}".encode() in environ:
                return int(child)
    return None


def test_one_of_two_torchrun_processes_killed_then_the_job_resumes(tmp_path):
    data = tmp_path / "data"
    shard_dataset(ShardRequest("fashion-mnist", str(data), LabelSubsetSpec(per_class=1),
                               max_samples_per_shard=8, sample_limit=32))  # fmt: skip
    settings = json.loads(json.dumps(SETTINGS))
    settings["data"]["num_workers"] = 0
    settings["pretrain"]["optimizer"]["epochs"] = 4  # 4 steps per pass: 32 x 4 // 8 + 1 = 17
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(settings))
    output = tmp_path / "out"
    checkpoints = CheckpointStore(str(output / "checkpoints"))

    first = _torchrun(config, data, output, tmp_path / "first.log")
    deadline = time.monotonic() + 300
    while 4 not in checkpoints.steps():
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    victim = _rank_process(first.pid, rank=1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    assert first.wait(timeout=120) != 0
    log = (tmp_path / "first.log").read_text()
    assert "Signal 9 (SIGKILL)" in log or "exitcode  : -9" in log, log

    assert not (output / "model.pt").exists()
    sealed = checkpoints.steps()
    print(f"[faults] rank 1 killed after the checkpoint of step 4; sealed: {sealed}")
    assert sealed and sealed[-1] < 16, sealed
    for step in sealed:
        checkpoints.load(checkpoints.uri_for_step(step))

    second = _torchrun(config, data, output, tmp_path / "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()
    log = (tmp_path / "second.log").read_text()
    newest = checkpoints.uri_for_step(sealed[-1])
    assert f"resuming from {newest}: step {sealed[-1]}" in log, log
    # No warning from the resume; 17 steps at batch 8 may leave the loss where it started, and
    # the stage-health check rightly says so (that warning is about the toy budget, not faults).
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert all("contrastive loss hardly moved" in line for line in warnings), warnings
    _, metadata = load_model(ObjectStore(), str(output / "model.pt"))
    assert metadata["steps"] == 17
