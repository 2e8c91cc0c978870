"""Real rendezvous of a multi-node step on this machine: the exact command a TrainJob's nodes
run, started as 2 "nodes" x 2 processes with the PET_* environment Kubeflow Trainer sets
(LocalProcessBackend, gloo), checkpoints on a real S3 server (SeaweedFS).

- 2 nodes x 2 processes end with the same weights, bit for bit, as 1 node x 4 processes
  (torchrun --standalone, what a one-node 4-GPU step runs): the nodes change nothing;
  test_pretrain_step shows 2 processes match 1 on the same global batch.
- Every process of node 1 is SIGKILLed after the step-4 checkpoint; like a JobSet, the
  backend restarts all nodes, and the run resumes from S3 to the same final weights.
"""

import subprocess
import threading
import time

import pytest
import torch

from simclrv2.config.loading import from_dict
from simclrv2.config.run_config import RunConfig
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.multinode.launcher import run_multinode_step
from simclrv2.multinode.local_backend import LocalProcessBackend
from simclrv2.multinode.node_spec import NodeSpec
from simclrv2.multinode.trainjob import trainjob_name
from simclrv2.pipeline_support.gpu_launch import torchrun_command
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset
from simclrv2.steps.model_artifact import load_model
from simclrv2.storage.object_store import ObjectStore
from tests.test_pretrain_step import TINY as PRETRAIN_TINY

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# test_pretrain_step's tiny run, on 256 images with global BN and no loader workers (4
# processes share this machine's cores): global batch 32 (8 per process), 2 epochs, 17 steps;
# checkpoints every 4.
TINY = {
    **PRETRAIN_TINY,
    "data": {**PRETRAIN_TINY["data"], "num_workers": 0, "shuffle_buffer": 32},
    "runtime": {**PRETRAIN_TINY["runtime"], "global_bn": True},
}


@pytest.fixture
def s3_env(s3_server, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 4 processes on this machine's cores
    return f"s3://{s3_bucket}"


@pytest.fixture
def config(s3_env) -> RunConfig:
    dataset = f"{s3_env}/fmnist"
    request = ShardRequest("fashion-mnist", dataset, LabelSubsetSpec(per_class=2),
                           max_samples_per_shard=64, sample_limit=256)  # fmt: skip
    shard_dataset(request)
    return from_dict(RunConfig, {**TINY, "data": {**TINY["data"], "dataset": dataset}})


def _spec() -> NodeSpec:
    return NodeSpec(nodes=2, processes_per_node=2, image="simclrv2:test")


def _weights(uri: str) -> dict:
    model, metadata = load_model(ObjectStore(), uri)
    assert metadata["steps"] == 17  # 256 x 2 // 32 + 1, the reference's count
    return model.state_dict()


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_two_nodes_match_one_node_and_resume_after_losing_a_node(config, s3_env, tmp_path):
    lines = []
    backend = LocalProcessBackend(tmp_path / "jobs", max_restarts=2, poll_seconds=0.1)
    straight = f"{s3_env}/straight/pretrain"
    run_multinode_step("pretrain", config, straight, _spec(), backend, poll_seconds=0.2,
                       say=lines.append)  # fmt: skip
    log = "\n".join(lines)
    assert "world size 4" in log
    assert "[node 0] " in log and "4 process(es)" in log  # the group spans both nodes
    node1 = backend.node_log(trainjob_name(straight), 1).read_text()
    assert "[pretrain]" not in node1  # only rank 0 (on node 0) reports

    # The same command on one node of 4 processes (torchrun --standalone).
    one_node = f"{s3_env}/one-node/pretrain"
    store = ObjectStore()
    store.write_bytes(f"{one_node}/launch/run.yaml",
                      store.read_bytes(f"{straight}/launch/run.yaml"))  # fmt: skip
    command = torchrun_command("pretrain", f"{one_node}/launch/run.yaml", one_node, 4)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    expected = _weights(f"{straight}/model.pt")
    _assert_identical(_weights(f"{one_node}/model.pt"), expected)

    # Lose node 1 after the step-4 checkpoint: every node restarts and resumes from S3.
    killed = f"{s3_env}/killed/pretrain"
    name = trainjob_name(killed)
    outcome, killed_lines = {}, []

    def launch():
        try:
            outcome["model"] = run_multinode_step(
                "pretrain", config, killed, _spec(), backend, poll_seconds=0.2,
                say=killed_lines.append,
            )  # fmt: skip
        except BaseException as error:
            outcome["error"] = error

    launcher = threading.Thread(target=launch)
    launcher.start()
    deadline = time.monotonic() + 600
    while not store.exists(f"{killed}/checkpoints/step-000000004.pt"):
        assert launcher.is_alive(), outcome
        assert time.monotonic() < deadline
        time.sleep(0.1)
    backend.kill_node(name, 1)
    launcher.join(timeout=900)
    assert "error" not in outcome, outcome.get("error")
    assert backend.attempt(name) == 1  # one restart of all nodes
    resumed = backend.node_log(name, 0, attempt=1).read_text()
    assert "resuming from" in resumed and f"{killed}/checkpoints/step-" in resumed, resumed
    _assert_identical(_weights(outcome["model"]), expected)
