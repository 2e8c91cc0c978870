"""The TrainJob a multi-node step submits: what Kubeflow Trainer v2.3.0's API takes (its
published models, kubeflow-trainer-api==2.3.0), named so a retry finds it, secrets by
reference only."""

import json
import re

import pytest
from kubeflow_trainer_api.models.trainer_v1alpha1_train_job import TrainerV1alpha1TrainJob

from simclrv2.multinode.node_spec import SPEC_ENV, NodeSpec, spec_from_environment
from simclrv2.multinode.trainjob import NODE, build_trainjob, trainjob_name

SPEC = NodeSpec(
    nodes=4, processes_per_node=8, image="ghcr.io/acme/simclrv2:0.1.0-gpu",
    resources={"requests": {"cpu": "64", "memory": "400Gi", "nvidia.com/gpu": 8},
               "limits": {"memory": "600Gi", "nvidia.com/gpu": 8}},
    node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    shm_size="64Gi", image_pull_secrets=["registry-credentials"],
    env={"AWS_ENDPOINT_URL": "http://seaweedfs.kubeflow:8333",
         "PUSHGATEWAY_URL": "http://pushgateway.simclrv2:9091"},
    secret_env={"AWS_ACCESS_KEY_ID": ["mlpipeline-minio-artifact", "accesskey"],
                "AWS_SECRET_ACCESS_KEY": ["mlpipeline-minio-artifact", "secretkey"]},
    active_deadline_seconds=604800,
)  # fmt: skip
OUTPUT = "s3://mlpipeline/simclrv2/runs/6f1c9a52-5d2e-4c1b-9f0a-2b7e3c4d5e6f/pretrain"
COMMAND = ["python", "-m", "torch.distributed.run", "-m", "simclrv2.cli", "pretrain"]


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def test_the_trainjob_round_trips_through_trainers_api_models_with_nothing_dropped():
    job = build_trainjob(trainjob_name(OUTPUT), SPEC, COMMAND, "pretrain", OUTPUT)
    parsed = _drop_none(TrainerV1alpha1TrainJob.from_dict(job).to_dict())
    assert parsed == json.loads(json.dumps(job))


def test_a_misspelt_field_would_be_caught_by_the_round_trip():
    job = build_trainjob(trainjob_name(OUTPUT), SPEC, COMMAND, "pretrain", OUTPUT)
    job["spec"]["trainer"]["numProcsPerNode"] = job["spec"]["trainer"].pop("numProcPerNode")
    assert _drop_none(TrainerV1alpha1TrainJob.from_dict(job).to_dict()) != job


def test_placement_moves_to_the_nodes_and_secrets_stay_references():
    job = build_trainjob(trainjob_name(OUTPUT), SPEC, COMMAND, "pretrain", OUTPUT)
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    (patch,) = job["spec"]["runtimePatches"]
    assert "/" in patch["manager"]  # Trainer requires a domain-prefixed manager
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == NODE
    pod = replicated["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == SPEC.tolerations
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 0}
    assert pod["volumes"] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}}
    ]
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert "containers" not in pod  # Trainer refuses env patches on `node`; env is in trainer
    env = {e["name"]: e for e in trainer["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {
        "secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": "secretkey"}}}  # fmt: skip
    assert not any(name.startswith("PET_") for name in env)  # reserved: Trainer sets them
    assert job["spec"]["activeDeadlineSeconds"] == 604800


def test_names_are_deterministic_distinct_per_step_and_valid_dns_labels():
    steps = ("pretrain", "finetune", "supervised", "distill")
    names = {step: trainjob_name(OUTPUT.replace("pretrain", step)) for step in steps}
    assert len(set(names.values())) == 4
    assert trainjob_name(OUTPUT) == trainjob_name(OUTPUT + "/") == names["pretrain"]
    other_run = OUTPUT.replace("6f1c9a52", "00000000")
    assert trainjob_name(other_run) != names["pretrain"]
    for name in [*names.values(), trainjob_name("s3://b/r/A_Very_Long_Step_Name_Indeed_x")]:
        # DNS-1035, and short enough for JobSet's pod host names <name>-node-0-0.
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 40, name


def test_the_spec_travels_as_json_and_bad_specs_are_refused(monkeypatch):
    monkeypatch.setenv(SPEC_ENV, SPEC.to_json())
    assert spec_from_environment() == SPEC and SPEC.world_size == 32
    monkeypatch.delenv(SPEC_ENV)
    assert spec_from_environment() is None
    with pytest.raises(ValueError, match="nodes >= 2"):
        NodeSpec(nodes=1, processes_per_node=1, image="i")
    with pytest.raises(ValueError, match="unknown field"):
        NodeSpec.from_json(json.dumps({"nodes": 2, "processes_per_node": 1, "image": "i",
                                       "gpus": 8}))  # fmt: skip
