"""The compiled pipeline YAML of every profile: placement, secrets, typed artifacts."""

from pathlib import Path

import pytest
import yaml

from pipelines.compiler import compile_profile, load_profile
from pipelines.placement import LAUNCHER_RESOURCES, NODE_KEYS
from simclrv2.multinode.node_spec import SPEC_ENV, NodeSpec

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
    # A profile with pretrained_model may import a network instead of pretraining it.
    importing = {"import-pretrained"} if "pretrained_model" in settings["parameters"] else set()
    assert set(tasks) == sharding | importing | {"retrain-gate", "pretrain", "finetune",
        "supervised", "pseudolabel", "distill", "evaluate", "promote"}  # fmt: skip
    for name, (_, task) in tasks.items():
        step_name = "shard" if name.startswith("shard") else name.replace("-", "_")
        step = {**settings["steps"].get("default", {}), **settings["steps"].get(step_name, {})}
        executor = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        container = spec["deploymentSpec"]["executors"][executor]["container"]
        platform = k8s[executor]
        assert container["image"] == settings["image"]
        resources = container.get("resources", {})
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        if step.get("nodes", 1) > 1:  # a small CPU launcher; the nodes get the rest
            _assert_multinode_launcher(settings, step, container, platform)
            step = {k: v for k, v in step.items() if k not in NODE_KEYS}
            step |= LAUNCHER_RESOURCES
        else:
            assert SPEC_ENV not in env
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


def _assert_multinode_launcher(settings: dict, step: dict, container: dict, platform: dict):
    resources = container.get("resources", {})
    assert "accelerator" not in resources
    assert resources["resourceMemoryLimit"] == LAUNCHER_RESOURCES["memory_limit"]
    assert "tolerations" not in platform and "nodeSelector" not in platform
    assert "emptyDirMounts" not in platform
    env = {e["name"]: e["value"] for e in container["env"]}
    nodes = NodeSpec.from_json(env[SPEC_ENV])
    assert nodes.nodes == step["nodes"]
    expected = step.get("processes_per_node") or step.get("gpus") or 1
    assert nodes.processes_per_node == expected
    accelerator = step.get("accelerator", "nvidia.com/gpu")
    if step.get("gpus"):
        assert nodes.resources["limits"][accelerator] == str(step["gpus"])
    assert nodes.resources["limits"]["memory"] == step["memory_limit"]
    assert nodes.tolerations == step.get("tolerations", [])
    assert nodes.shm_size == step.get("shm_size")
    assert nodes.image == settings["image"]
    assert nodes.active_deadline_seconds == step["timeout_seconds"]
    assert nodes.secret_env["AWS_SECRET_ACCESS_KEY"] == [
        settings["s3"]["secret"],
        settings["s3"]["secret_key_field"],
    ]


def test_a_step_on_several_nodes_becomes_a_launcher_of_a_trainjob(tmp_path):
    profile = yaml.safe_load(Path("pipelines/profiles/tiny.yaml").read_text())
    profile["steps"]["distill"] = {"nodes": 3, "processes_per_node": 2, "memory_limit": "3Gi"}
    path = tmp_path / "tiny-3-nodes.yaml"
    path.write_text(yaml.safe_dump(profile))
    spec, k8s, _ = _compile(path, tmp_path)
    _, task = _tasks_by_name(spec)["distill"]
    executor = spec["components"][task["componentRef"]["name"]]["executorLabel"]
    container = spec["deploymentSpec"]["executors"][executor]["container"]
    step = {**profile["steps"]["default"], **profile["steps"]["distill"]}
    _assert_multinode_launcher(profile, step, container, k8s[executor])
    nodes = NodeSpec.from_json({e["name"]: e["value"] for e in container["env"]}[SPEC_ENV])
    assert (nodes.nodes, nodes.processes_per_node, nodes.world_size) == (3, 2, 6)
    assert task["retryPolicy"]["maxRetryCount"] == step["retries"]  # a retry re-attaches
    for other in ("pretrain", "finetune"):
        _, other_task = _tasks_by_name(spec)[other]
        other_exec = spec["components"][other_task["componentRef"]["name"]]["executorLabel"]
        other_env = spec["deploymentSpec"]["executors"][other_exec]["container"]["env"]
        assert SPEC_ENV not in {e["name"] for e in other_env}


@pytest.mark.parametrize(("step", "settings", "message"), [
    ("pseudolabel", {"nodes": 2}, "only the training steps"),
    ("pretrain", {"nodes": 0}, "nodes must be an integer >= 1"),
    ("pretrain", {"nodes": "2"}, "nodes must be an integer >= 1"),
    ("pretrain", {"processes_per_node": 4}, "applies to multi-node steps"),
])  # fmt: skip
def test_bad_node_settings_fail_at_compile_time(tmp_path, step, settings, message):
    profile = yaml.safe_load(Path("pipelines/profiles/tiny.yaml").read_text())
    profile["steps"][step] = settings
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(profile))
    with pytest.raises(ValueError, match=message):
        load_profile(path)


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


def test_the_two_node_tiny_profile_is_tiny_with_two_node_steps():
    tiny = load_profile("pipelines/profiles/tiny.yaml")
    two = load_profile("pipelines/profiles/tiny-2-nodes.yaml")
    assert two["steps"].pop("pretrain") == {"nodes": 2}
    assert two["steps"].pop("distill") == {"nodes": 2}
    for key in ("name", "description"):
        del tiny[key], two[key]
    assert two == tiny  # the rest stays in step with tiny.yaml
