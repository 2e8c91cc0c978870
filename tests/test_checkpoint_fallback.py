"""A damaged checkpoint is skipped with a warning and the previous complete one is used.

In a real pretraining run, the newest checkpoints are truncated or have a bit flipped: the
restarted step names each one it skips and why, resumes from the newest intact one and ends
with the weights and checkpoints of an uninterrupted run. Across two processes (gloo), the
checkpoint chosen is the newest that every rank could load: one that only rank 1 finds
damaged is skipped by both.
"""

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from simclrv2.config.loading import from_dict
from simclrv2.config.run_config import RunConfig
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.distributed.agreed_checkpoint import load_agreed_checkpoint
from simclrv2.distributed.context import DistributedContext
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset
from simclrv2.steps.pretrain import pretrain
from simclrv2.training.checkpoint import CheckpointStore
from tests.multiprocess import free_port
from tests.test_preemption import SETTINGS


def _damage(path, how: str) -> None:
    content = bytearray(path.read_bytes())
    if how == "truncated":
        content = content[: len(content) // 3]
    else:  # one bit in the middle of the file, among the tensor bytes: torch.load would not notice
        content[len(content) // 2] ^= 0x10
    path.write_bytes(bytes(content))


@pytest.fixture
def one_thread():
    """A tiny model trains faster on one thread, and spins no idle OpenMP thread on a busy
    machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_damaged_newest_checkpoints_are_skipped_and_the_run_ends_as_uninterrupted(
    tmp_path, one_thread
):
    data = tmp_path / "data"
    shard_dataset(ShardRequest("fashion-mnist", str(data), LabelSubsetSpec(per_class=1),
                               max_samples_per_shard=8, sample_limit=32))  # fmt: skip
    settings = json.loads(json.dumps(SETTINGS))
    settings["data"] |= {"dataset": str(data), "num_workers": 0}
    config = from_dict(RunConfig, settings)
    # 32 images / batch 8 = 4 steps per pass; 32 x 2 // 8 + 1 = 9 steps (the reference's
    # count); stopped after 6 (checkpoints 2, 4, 6: those of the uninterrupted run, as
    # max_steps keeps the full run's schedule).
    output = tmp_path / "run"
    pretrain(config, str(output), max_steps=6, print_fn=lambda *_: None)
    folder = output / "checkpoints"
    intact = {step: (folder / f"step-00000000{step}.pt").read_bytes() for step in (4, 6)}
    _damage(folder / "step-000000006.pt", "truncated")
    _damage(folder / "step-000000004.pt", "one bit flipped")
    lines = []
    resumed = pretrain(config, str(output), print_fn=lines.append)

    log = "\n".join(map(str, lines))
    for step in (6, 4):
        assert f"WARNING: skipping checkpoint {folder}/step-00000000{step}.pt" in log, log
    assert log.count("fails its content check") == 2
    assert resumed.resumed_from == str(folder / "step-000000002.pt") and resumed.steps == 9
    assert f"resuming from {folder}/step-000000002.pt: step 2, epoch 0, batch 2" in log
    # Steps 4 and 6 were trained and saved again: the same bytes as before the damage.
    for step, content in intact.items():
        assert (folder / f"step-00000000{step}.pt").read_bytes() == content, step
    assert CheckpointStore(str(folder)).steps() == [2, 4, 6, 8, 9]


def _choose(rank: int, port: int, folder: str, result: str) -> None:
    """One rank of a two-process gloo group (a forked child): pick and report; never returns."""
    code = 1
    try:
        torch.set_num_threads(1)
        store = dist.TCPStore("127.0.0.1", port, 2, is_master=rank == 0)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
        context = DistributedContext(rank, 2, 0, torch.device("cpu"))
        warnings = []
        uri, state = load_agreed_checkpoint(CheckpointStore(folder), context, warnings.append)
        chosen = {"uri": uri, "step": state["step"] if state else None, "warnings": warnings}
        Path(result).write_text(json.dumps(chosen))
        dist.destroy_process_group()
        code = 0
    finally:
        os._exit(code)


def test_ranks_resume_from_the_newest_checkpoint_every_rank_could_load(tmp_path):
    # Each rank sees its own copy of the folder (as nodes with their own disks would); the
    # copy rank 1 sees of step 6 is damaged.
    folders = [str(tmp_path / f"rank{rank}") for rank in (0, 1)]
    for folder in folders:
        store = CheckpointStore(folder, keep=10)
        for step in (2, 4, 6):
            store.save(step, {"step": step, "weights": torch.full((64,), float(step))})
    _damage(tmp_path / "rank1" / "step-000000006.pt", "one bit flipped")

    # Two real processes, forked (this process has torch loaded: no interpreter start).
    port = free_port()
    results = [tmp_path / f"rank{rank}.json" for rank in (0, 1)]
    pids = []
    for rank in (0, 1):
        pid = os.fork()
        if pid == 0:
            _choose(rank, port, folders[rank], str(results[rank]))
        pids.append(pid)
    assert [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids] == [0, 0]

    for rank, result in enumerate(results):
        chosen = json.loads(result.read_text())
        assert chosen["uri"] == f"{folders[rank]}/step-000000004.pt" and chosen["step"] == 4
        assert len(chosen["warnings"]) == 1
        assert "step-000000006.pt (rank 1: checkpoint" in chosen["warnings"][0]
        assert "fails its content check" in chosen["warnings"][0]
    assert CheckpointStore(folders[0]).steps() == [2, 4]  # unsealed: the run saves it again
