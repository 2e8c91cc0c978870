"""The compiled pipeline YAML of every profile: placement, secrets, typed artifacts."""

from pathlib import Path

import pytest
import yaml

from pipelines.compiler import compile_profile, load_profile

PROFILES = sorted(Path("pipelines/profiles").glob("*.yaml"))
TRAINING = ("pretrain", "finetune", "supervised", "distill")


def _compile(profile: Path, tmp_path: Path) -> tuple[dict, dict, str]:
    output = compile_profile(profile, tmp_path / f"{profile.stem}.yaml")
    text = output.read_text()
    spec, platform = yaml.safe_load_all(text)
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], text


def _tasks_by_name(spec: dict) -> dict:
    """display name -> (task key, task) across the root DAG and its condition branch."""
    tasks = {}
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        for key, task in dag["tasks"].items():
            if (
                "componentRef" in task
                and "dag" not in spec["components"][task["componentRef"]["name"]]
            ):  # a step, not the condition's sub-DAG
                tasks[task["taskInfo"]["name"]] = (key, task)
    return tasks


def _training_branch_dataset(spec: dict) -> dict:
    """The Dataset the `train` branch (run when the retrain gate says so) receives."""
    (branch,) = [
        t for t in spec["root"]["dag"]["tasks"].values() if t["taskInfo"]["name"] == "train"
    ]
    assert "retrain-gate" in branch["triggerPolicy"]["condition"]
    (dataset,) = branch["inputs"]["artifacts"].values()
    return dataset["taskOutputArtifact"]


def test_there_are_the_three_required_profiles():
    assert {p.stem for p in PROFILES} >= {"tiny", "imagenet-r50", "imagenet-r152x3sk-teacher"}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_compile_is_byte_for_byte_stable(profile, tmp_path):
    first = compile_profile(profile, tmp_path / "a.yaml").read_bytes()
    second = compile_profile(profile, tmp_path / "b.yaml").read_bytes()
    assert first == second


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_step_is_placed_as_its_profile_says(profile, tmp_path):
    settings = load_profile(profile)
    spec, k8s, _ = _compile(profile, tmp_path)
    tasks = _tasks_by_name(spec)
    sharding = {"shard"} if settings.get("shard_parts", 1) == 1 else {"shard-part", "shard-publish"}
    assert set(tasks) == sharding | {"retrain-gate", "pretrain", "finetune", "supervised",
                                     "pseudolabel", "distill", "evaluate", "promote"}  # fmt: skip
    for name, (_, task) in tasks.items():
        step_name = "shard" if name.startswith("shard") else name.replace("-", "_")
        step = {**settings["steps"].get("default", {}), **settings["steps"].get(step_name, {})}
        executor = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        container = spec["deploymentSpec"]["executors"][executor]["container"]
        platform = k8s[executor]
        assert container["image"] == settings["image"]
        resources = container.get("resources", {})
        if step.get("gpus", 0):
            assert resources["accelerator"]["resourceType"] == step["accelerator"]
            assert resources["accelerator"]["resourceCount"] == str(step["gpus"])
            selector = platform.get("nodeSelector", {}).get("labels", {})
            assert selector == step.get("node_selector", {})
            assert platform["tolerations"] == [
                {k: v for k, v in t.items()} for t in step["tolerations"]
            ]
        else:
            assert "accelerator" not in resources
        assert resources["resourceMemoryLimit"] == step["memory_limit"]
        # S3 keys only from the Kubernetes secret, never as values.
        secret = platform["secretAsEnv"][0]
        assert secret["secretName"] == settings["s3"]["secret"]
        assert {e["envVar"] for e in secret["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
        }  # fmt: skip
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["AWS_ENDPOINT_URL"] == settings["s3"]["endpoint_url"]
        assert "AWS_SECRET_ACCESS_KEY" not in env
        if "shm_size" in step:
            mount = platform["emptyDirMounts"][0]
            assert (mount["mountPath"], mount["medium"]) == ("/dev/shm", "Memory")
            assert mount["sizeLimit"] == step["shm_size"]
        if step.get("retries"):
            assert task["retryPolicy"]["maxRetryCount"] == step["retries"]
        assert platform["activeDeadlineSeconds"] == str(step["timeout_seconds"])
        # The image's non-root user, enforced by the kubelet.
        assert platform["securityContext"] == {
            "runAsUser": "10001", "runAsGroup": "0", "runAsNonRoot": True
        }  # fmt: skip
        pull_secrets = [s["secretName"] for s in platform.get("imagePullSecret", [])]
        assert pull_secrets == settings.get("image_pull_secrets", [])
        assert platform.get("imagePullPolicy") == settings.get("image_pull_policy")


def test_gpu_profiles_put_training_on_gpu_nodes(tmp_path):
    spec, k8s, _ = _compile(Path("pipelines/profiles/imagenet-r50.yaml"), tmp_path)
    tasks = _tasks_by_name(spec)
    for name in TRAINING:
        executor = spec["components"][tasks[name][1]["componentRef"]["name"]]["executorLabel"]
        resources = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
        assert resources["accelerator"]["resourceCount"] == "8", name
        assert k8s[executor]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_shard_fans_out_with_parallel_for_when_the_profile_asks(tmp_path):
    spec, _, _ = _compile(Path("pipelines/profiles/imagenet-r50.yaml"), tmp_path)
    loops = {k: t for k, t in spec["root"]["dag"]["tasks"].items() if "parameterIterator" in t}
    assert len(loops) == 1
    ((loop_key, loop),) = loops.items()
    assert loop["parameterIterator"]["items"]["raw"] == str(list(range(8)))
    tasks = _tasks_by_name(spec)
    assert tasks["shard-publish"][1]["dependentTasks"] == [loop_key]  # waits for every part
    gate = tasks["retrain-gate"][1]["inputs"]["artifacts"]["dataset"]["taskOutputArtifact"]
    assert gate["producerTask"] == tasks["shard-publish"][0]
    assert _training_branch_dataset(spec)["producerTask"] == tasks["shard-publish"][0]


def test_only_typed_artifacts_travel_between_steps(tmp_path):
    spec, _, _ = _compile(Path("pipelines/profiles/tiny.yaml"), tmp_path)
    allowed = {"system.Dataset", "system.Model", "system.Metrics",
               "system.ClassificationMetrics", "system.HTML", "system.Markdown"}  # fmt: skip
    for component in spec["components"].values():
        for direction in ("inputDefinitions", "outputDefinitions"):
            for artifact in component.get(direction, {}).get("artifacts", {}).values():
                assert artifact["artifactType"]["schemaTitle"] in allowed
    tasks = _tasks_by_name(spec)
    assert _training_branch_dataset(spec)["producerTask"] == tasks["shard"][0]
    pretrain_inputs = tasks["pretrain"][1]["inputs"]["artifacts"]["dataset"]
    assert pretrain_inputs["componentInputArtifact"]  # the branch's input: the shard's Dataset
    promote = tasks["promote"][1]
    assert "gate-passed" in yaml.safe_dump(spec["components"])
    assert promote["inputs"]["artifacts"]["student"]["componentInputArtifact"]


def test_no_secret_value_lands_in_the_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-access-key-id-not-real")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value-do-not-leak")
    for profile in PROFILES:
        _, _, text = _compile(profile, tmp_path)
        assert "very-secret-value-do-not-leak" not in text
        assert "test-access-key-id-not-real" not in text


def test_bad_profiles_are_rejected(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\n")
    with pytest.raises(ValueError, match="lacks"):
        load_profile(broken)
    profile = yaml.safe_load(Path("pipelines/profiles/tiny.yaml").read_text())
    profile["steps"]["pretrain"] = {"gpu": 1}
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(profile))
    with pytest.raises(ValueError, match="unknown placement setting"):
        compile_profile(typo, tmp_path / "out.yaml")
    profile = yaml.safe_load(Path("pipelines/profiles/tiny.yaml").read_text())
    profile["run_config"]["pretrain"]["temprature"] = 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(profile))
    with pytest.raises(ValueError, match=r"unknown setting pretrain\.temprature"):
        load_profile(bad)
