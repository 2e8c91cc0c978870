"""The step image, built here with the real Docker engine from an offline Debian base and the
local wheelhouse, and the whole pipeline run in it through kfp.local's DockerRunner.

Skipped, saying why, only when no Docker engine answers and none can be started, or when the
disk has too little room for the build (checked first, see FIRST_BUILD_BYTES). The first
build takes minutes (the dependency layer holds torch); later builds reuse Docker's cache and
rebuild only the project layer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.docker_engine import DockerEngine, find_or_start_docker_engine
from tests.test_pipeline_local import tiny_pipeline_command

pytestmark = [pytest.mark.slow, pytest.mark.docker]

REPO = Path(__file__).resolve().parent.parent
IMAGE = "simclrv2-test:ci-cpu"
GPU_IMAGE = "simclrv2-test:ci-gpu"
NON_ROOT_UID = 10001


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory) -> Iterator[DockerEngine]:
    engine = find_or_start_docker_engine(tmp_path_factory.mktemp("dockerd") / "dockerd.log")
    if isinstance(engine, str):
        pytest.skip(f"image tests skipped: {engine}")
    try:
        yield engine
    finally:
        engine.stop()


GiB = 1 << 30
# Disk a first build takes, measured with the pinned torch 2.14.1 CUDA wheels: the wheelhouse
# (2.9 GB) and the build's peak (9.1 GB: pip's downloads beside the 5.75 GB venv layer), plus
# a margin.
# A rebuild over a cached dependency layer takes little. Checked first: a build that fills the
# disk also breaks every later test that writes (the S3 server among them).
FIRST_BUILD_BYTES = 14 * GiB
REBUILD_BYTES = 2 * GiB


def _disk_problem(engine: DockerEngine, image: str) -> str | None:
    """Why building `image` here would fill the disk, or None."""
    import docker

    need = FIRST_BUILD_BYTES
    for built in (IMAGE, GPU_IMAGE):  # both targets share the dependency layer
        try:
            engine.client.images.get(built)
            need = REBUILD_BYTES
        except docker.errors.ImageNotFound:
            pass
    for place in {Path(engine.client.info()["DockerRootDir"]), REPO}:
        free = shutil.disk_usage(place if place.exists() else place.anchor).free
        if free < need:
            return (
                f"image tests skipped: {place} has {free / GiB:.1f} GiB free and building "
                f"{image} needs about {need / GiB:.0f} GiB; free disk space (docker system prune, "
                "or remove images/wheelhouse) to run them"
            )
    return None


def _build(engine: DockerEngine, target: str) -> None:
    """images/build.sh for one target of the current tree; offline: the wheelhouse (filled
    here) and, with no registry, the Debian base made from Debian's archive."""
    problem = _disk_problem(engine, f"simclrv2-test:ci-{target}")
    if problem:
        pytest.skip(problem)
    subprocess.run(["make", "wheelhouse"], cwd=REPO, check=True, capture_output=True)
    build = subprocess.run(
        ["images/build.sh", "simclrv2-test", "ci", target],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]


@pytest.fixture(scope="session")
def step_image(docker_engine) -> str:
    _build(docker_engine, "cpu")
    return IMAGE


@pytest.fixture(scope="session")
def gpu_image(docker_engine) -> str:
    _build(docker_engine, "gpu")
    return GPU_IMAGE


def _run(image: str, *command: str, **options) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "run", "--rm", *options.pop("docker_args", ()), image, *command],
        capture_output=True, text=True, timeout=600, **options,
    )  # fmt: skip


def test_image_runs_simclrv2_help_by_default_as_non_root(docker_engine, step_image):
    image = docker_engine.client.images.get(step_image)
    assert image.attrs["Config"]["User"] == str(NON_ROOT_UID)
    assert image.attrs["Config"].get("Entrypoint") in (None, [])  # KFP sets the command
    default = _run(step_image)
    assert default.returncode == 0, default.stderr
    assert default.stdout.startswith("usage: simclrv2")
    assert _run(step_image, "id", "-u").stdout.strip() == str(NON_ROOT_UID)
    versions = _run(
        step_image,
        "python", "-c", "import torch, torchvision, kfp; "
        "print(torch.__version__, torchvision.__version__, kfp.__version__)",
    )  # fmt: skip
    pinned = dict(
        line.split("==")
        for line in (REPO / "images/constraints.txt").read_text().splitlines()
        if "==" in line
    )
    torch_version, vision_version, kfp_version = versions.stdout.split()
    assert torch_version.split("+")[0] == pinned["torch"]
    assert vision_version.split("+")[0] == pinned["torchvision"]
    assert kfp_version == pinned["kfp"]
    # Nothing secret in the image's configuration (the CA bundle is a build secret, keys are
    # given to the container at run time).
    environment = {v.split("=", 1)[0] for v in image.attrs["Config"]["Env"]}
    assert not {name for name in environment if name.startswith("AWS_")}
    assert "DEBIAN_FRONTEND" not in environment  # a build setting, not the image's
    assert _run(step_image, "ls", "/tmp/pip-ca.pem").returncode != 0


def test_gpu_image_is_a_cuda_build_with_nccl_for_the_nvidia_runtime(docker_engine, gpu_image):
    """No GPU here: what can be checked is the build (CUDA, cuDNN, NCCL load) and the settings
    the NVIDIA container runtime reads."""
    image = docker_engine.client.images.get(gpu_image)
    assert image.attrs["Config"]["User"] == str(NON_ROOT_UID)
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in image.attrs["Config"]["Env"]
    probe = _run(
        gpu_image,
        "python", "-c", "import torch, torch.distributed as d; print(torch.version.cuda, "
        "torch.backends.cudnn.version(), '.'.join(map(str, torch.cuda.nccl.version())), "
        "d.is_nccl_available())",
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    cuda, cudnn, nccl, nccl_backend = probe.stdout.split()
    assert cuda.startswith("13.") and int(cudnn) >= 90000 and nccl.startswith("2.")
    assert nccl_backend == "True"
    assert _run(gpu_image, "test", "-e", "/usr/share/datasets/fashion-mnist").returncode == 1


@pytest.mark.s3
def test_image_runs_the_shard_step_against_s3_as_non_root(s3_server, s3_bucket, step_image):
    """The real shard step in the image: Fashion-MNIST (shipped in the cpu image) to SeaweedFS
    on the host's loopback, keys only in the container's environment."""
    output = f"s3://{s3_bucket}/fashion-mnist"
    environment = {
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_access_key,
    }
    docker_args = ["--network", "host"]
    for name in environment:
        docker_args += ["--env", name]  # value from this process's environment, not argv
    shard = _run(
        step_image,
        "simclrv2", "shard", "--source", "fashion-mnist", "--output", output,
        "--labels-per-class", "3", "--max-samples-per-shard", "20000",
        docker_args=docker_args, env={**environment, "PATH": "/usr/bin:/bin:/usr/local/bin"},
    )  # fmt: skip
    assert shard.returncode == 0, shard.stdout[-2000:] + shard.stderr[-2000:]
    assert s3_server.secret_access_key not in shard.stdout + shard.stderr
    manifest = json.loads(
        s3_server.client()
        .get_object(Bucket=s3_bucket, Key="fashion-mnist/manifest.json")["Body"]
        .read()
    )
    counts = {name: sum(s["samples"] for s in split["shards"])
              for name, split in manifest["splits"].items()}  # fmt: skip
    assert counts == {"labeled": 30, "unlabeled": 60000, "test": 10000}


@pytest.mark.s3
@pytest.mark.pushgateway
def test_make_run_docker_runs_every_step_in_the_image(
    s3_server, pushgateway, step_image, tmp_path, monkeypatch, capsys
):
    """`make run-docker`'s command on real data shrunk to seconds: every task in the image,
    data on SeaweedFS, training metrics pushed from the containers to a real Pushgateway."""
    from simclrv2.cli import main
    from simclrv2.storage.object_store import ObjectStore

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway.url)
    s3_server.client().create_bucket(Bucket="docker-run")
    out = tmp_path / "out"
    command = tiny_pipeline_command(
        tmp_path, "run-docker", "--image", step_image, "--output", str(out), "--bucket",
        "docker-run",
    )  # fmt: skip

    assert main(command) == 0
    printed = capsys.readouterr().out
    tasks = ("shard", "retrain-gate", "pretrain", "finetune", "finetune-2", "pseudolabel",
             "distill", "evaluate", "promote")  # fmt: skip
    assert printed.count(f"Found image '{step_image}'") == len(tasks)
    assert s3_server.secret_access_key not in printed
    (root,) = (out / "kfp-root").iterdir()
    for task in tasks:
        # Written inside the container by the image's non-root user.
        assert (root / task / "executor_output.json").stat().st_uid == NON_ROOT_UID, task

    store = ObjectStore()
    prefix = "s3://docker-run/simclrv2-docker"
    promoted = json.loads(store.read_bytes(f"{prefix}/production/promoted.json"))
    run_id = promoted["run_id"]
    assert promoted["model"] == f"{prefix}/work/{run_id}/distill/model.pt"
    metrics = json.loads(store.read_bytes(f"{prefix}/work/{run_id}/evaluate/metrics.json"))
    assert set(metrics["models"]) == {"teacher", "student", "supervised"}
    assert all(0.0 <= m["top1"] <= m["top5"] <= 1.0 for m in metrics["models"].values())

    text = urllib.request.urlopen(f"{pushgateway.url}/metrics", timeout=10).read().decode()
    pushed = {
        sample.labels["step"]
        for family in text_string_to_metric_families(text)
        if family.name == "simclrv2_train_step"
        for sample in family.samples
        if sample.labels.get("run") == run_id
    }
    assert {"pretrain", "finetune", "distill"} <= pushed


def test_run_docker_explains_a_missing_image(docker_engine):
    from pipelines.docker_run import check_docker

    with pytest.raises(RuntimeError, match="make images IMAGE_TARGETS=cpu"):
        check_docker("simclrv2-test:no-such-tag")
