"""The multi-node launcher against a fake Kubernetes API server on loopback
(tests/kube_api_fake.py: the real REST protocol, a scripted Trainer controller), through the
official `kubernetes` client exactly as in a pipeline pod."""

import os
import signal
import threading

import pytest
from kubernetes import client

from simclrv2.config.run_config import RunConfig
from simclrv2.multinode.job_state import TrainJobError
from simclrv2.multinode.kubernetes_backend import KubernetesBackend
from simclrv2.multinode.launcher import Cancelled, run_multinode_step
from simclrv2.multinode.node_spec import NodeSpec
from simclrv2.multinode.trainjob import build_trainjob, trainjob_name
from tests.kube_api_fake import FakeKubernetes, Script

SPEC = NodeSpec(
    nodes=2, processes_per_node=8, image="ghcr.io/acme/simclrv2:0.1.0-gpu",
    resources={"requests": {"cpu": "64", "nvidia.com/gpu": "8"},
               "limits": {"nvidia.com/gpu": "8"}},
    node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    shm_size="64Gi", env={"AWS_ENDPOINT_URL": "http://seaweedfs.kubeflow:8333"},
    secret_env={"AWS_ACCESS_KEY_ID": ["mlpipeline-minio-artifact", "accesskey"]},
    active_deadline_seconds=3600,
)  # fmt: skip


@pytest.fixture
def fake():
    server = FakeKubernetes()
    yield server
    server.close()


@pytest.fixture
def backend(fake):
    configuration = client.Configuration()
    configuration.host = fake.url
    return KubernetesBackend(client.ApiClient(configuration), "kubeflow")


@pytest.fixture
def output(tmp_path):
    """The step's output; the 'nodes' wrote model.pt (the fake runs nothing)."""
    folder = tmp_path / "run-1" / "pretrain"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"model")
    return str(folder)


def _launch(backend, output, lines, **kwargs):
    return run_multinode_step("pretrain", RunConfig(run_id="run-1"), output, SPEC, backend,
                              poll_seconds=0.05, say=lines.append, **kwargs)  # fmt: skip


def test_success_creates_one_trainjob_streams_node0_and_returns_the_model(fake, backend, output):
    fake.default_script = Script(
        ["Running", "Running", "Running", ("Complete", "JobsCompleted", "")],
        log=[f"[pretrain] step {i}/5" for i in range(1, 6)],
    )
    lines = []
    assert _launch(backend, output, lines) == f"{output}/model.pt"
    (created,) = fake.calls("POST")
    job = created.body
    assert job["metadata"]["name"] == trainjob_name(output)
    assert job["spec"]["trainer"]["numNodes"] == 2 and job["spec"]["trainer"]["numProcPerNode"] == 8
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    command = job["spec"]["trainer"]["command"]
    assert "--standalone" not in command and command[command.index("--output") + 1] == output
    assert command[command.index("--config") + 1] == f"{output}/launch/run.yaml"
    assert not fake.calls("DELETE")  # a completed job stays for inspection
    node0 = [line for line in lines if line.startswith("[node 0]")]
    assert node0 == [f"[node 0] [pretrain] step {i}/5" for i in range(1, 6)]
    assert not fake.calls("GET", "wrong-node-log")  # node 1's pod was listed, not followed
    assert any("Complete" in line and "after" in line for line in lines)


def test_the_log_stream_breaks_and_reconnects_without_repeating_lines(fake, backend, output):
    log = [f"line {i}" for i in range(25)]
    fake.default_script = Script(["Running"] * 60 + [("Complete", "", "")], log=log,
                                 break_log_after=7)  # fmt: skip
    lines = []
    _launch(backend, output, lines)
    shown = [line.removeprefix("[node 0] ") for line in lines if line.startswith("[node 0] line")]
    assert fake.log_connections >= 2
    assert shown == log  # every line once, in order, across the broken stream


def test_failed_job_fails_the_step_with_trainers_reason_and_is_deleted(fake, backend, output):
    fake.default_script = Script(["Running", ("Failed", "FailedJobs", "node 1 exited with 137")])
    with pytest.raises(TrainJobError, match="FailedJobs: node 1 exited with 137"):
        _launch(backend, output, [])
    (deleted,) = fake.calls("DELETE")
    assert deleted.path.endswith(f"/trainjobs/{trainjob_name(output)}")
    assert deleted.query["propagationPolicy"] == ["Foreground"]  # the JobSet and pods go too


def test_deadline_exceeded_is_reported_as_such(fake, backend, output):
    deadline = ("Failed", "DeadlineExceeded", "TrainJob exceeded its activeDeadlineSeconds")
    fake.default_script = Script(["Running", deadline])
    with pytest.raises(TrainJobError, match="DeadlineExceeded"):
        _launch(backend, output, [])
    assert fake.calls("DELETE")


def test_an_existing_job_is_reattached_not_duplicated(fake, backend, output):
    job = build_trainjob(trainjob_name(output), SPEC, ["python"], "pretrain", output)
    fake.add_existing(job, Script(["Running", ("Complete", "", "")]))
    lines = []
    assert _launch(backend, output, lines) == f"{output}/model.pt"
    assert len(fake.calls("POST")) == 1  # answered 409 AlreadyExists
    assert any("re-attaching" in line for line in lines)
    assert len(fake.jobs) == 1 and not fake.calls("DELETE")


def test_a_job_that_failed_before_is_replaced_by_a_retried_launcher(fake, backend, output):
    name = trainjob_name(output)
    old = build_trainjob(name, SPEC, ["python", "old"], "pretrain", output)
    fake.add_existing(old, Script([("Failed", "FailedJobs", "OOMKilled")]))
    fake.default_script = Script(["Running", ("Complete", "", "")])
    lines = []
    _launch(backend, output, lines)
    assert len(fake.calls("POST")) == 2 and len(fake.calls("DELETE")) == 1
    assert fake.jobs[name]["spec"]["trainer"]["command"][1] == "-m"  # the new job
    assert any("failed before" in line and "resumes" in line for line in lines)


def test_forbidden_says_which_permission_and_how_to_grant_it(fake, backend, output):
    fake.forbid_create = True
    with pytest.raises(TrainJobError) as error:
        _launch(backend, output, [])
    message = str(error.value)
    assert "forbidden" in message and 'cannot create resource "trainjobs"' in message
    assert "manifests/overlays/simclrv2" in message and "--service-account" in message


def test_a_cluster_without_trainer_is_named(fake, backend, output):
    fake.no_trainer_api = True
    with pytest.raises(TrainJobError, match=r"Install Kubeflow Trainer v2\.3\.0"):
        _launch(backend, output, [])


def test_cancelling_the_run_deletes_the_trainjob(fake, backend, output):
    fake.default_script = Script(["Running"])  # never ends on its own
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(Cancelled):
            _launch(backend, output, [])
    finally:
        timer.cancel()
    (deleted,) = fake.calls("DELETE")
    assert deleted.path.endswith(trainjob_name(output))
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def test_a_completed_job_without_a_model_fails(fake, backend, tmp_path):
    lines = []
    with pytest.raises(TrainJobError, match="wrote no"):
        _launch(backend, str(tmp_path / "empty" / "pretrain"), lines)


def test_outside_a_cluster_the_error_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(TrainJobError, match="SIMCLRV2_TRAINJOB_BACKEND=local-processes"):
        KubernetesBackend.from_environment("kubeflow")
