"""Retry windows, GPU placement and the image in the compiled pipeline YAML (issue 10).

Argo counts a retried step's backoff.maxDuration from the start of its first attempt and reads
the backoff factor as an integer (pipelines/retry_window.py), so every compiled retry policy
must hold all attempts, each up to its timeout, plus the backoffs between them."""

import json
from pathlib import Path

import pytest
import yaml

from pipelines.compiler import compile_profile
from pipelines.retry_window import MARGIN_PER_ATTEMPT_S, parse_seconds
from simclrv2.cli import main

PROFILES = sorted(Path("pipelines/profiles").glob("*.yaml"))
TINY = Path("pipelines/profiles/tiny.yaml")
R50 = Path("pipelines/profiles/imagenet-r50.yaml")
GPU_PRODUCT = "nvidia.com/gpu.product"


def _load(path: Path) -> tuple[dict, dict, str]:
    text = path.read_text()
    spec, platform = yaml.safe_load_all(text)
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], text


def _compile(profile: Path, tmp_path: Path, **options) -> tuple[dict, dict, str]:
    return _load(compile_profile(profile, tmp_path / f"{profile.stem}.yaml", **options))


def _steps(spec: dict) -> dict:
    """display name -> (task, executor label) for every container task, in any DAG."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    steps = {}
    for dag in dags:
        for task in dag["tasks"].values():
            component = spec["components"][task["componentRef"]["name"]]
            if "executorLabel" in component:
                steps[task["taskInfo"]["name"]] = (task, component["executorLabel"])
    return steps


def _seconds(duration: str) -> int:
    assert duration.endswith("s"), duration
    return int(duration[:-1])


def _window(profile: Path, tmp_path: Path) -> dict:
    """display name -> compiled backoffMaxDuration in seconds, for the steps with retries."""
    spec, _, _ = _compile(profile, tmp_path)
    return {
        name: _seconds(task["retryPolicy"]["backoffMaxDuration"])
        for name, (task, _) in _steps(spec).items()
        if "retryPolicy" in task
    }


def _write(profile: dict, tmp_path: Path) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def _tiny_with(tmp_path: Path, step: str, **settings) -> Path:
    profile = yaml.safe_load(TINY.read_text())
    profile["steps"].setdefault(step, {}).update(settings)
    return _write(profile, tmp_path)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_retry_window_holds_every_attempt_and_backoff(profile, tmp_path):
    spec, k8s, _ = _compile(profile, tmp_path)
    retried = 0
    for name, (task, executor) in _steps(spec).items():
        policy = task.get("retryPolicy")
        if not policy:
            continue
        retried += 1
        retries = policy["maxRetryCount"]
        factor = policy["backoffFactor"]
        # Argo parses the factor KFP sends ("2" for 2.0) as an integer.
        assert float(factor).is_integer() and factor >= 1, (name, factor)
        timeout = int(k8s[executor]["activeDeadlineSeconds"])
        duration = _seconds(policy["backoffDuration"])
        waits = sum(duration * int(factor) ** n for n in range(retries))
        minimum = (retries + 1) * timeout + waits
        assert _seconds(policy["backoffMaxDuration"]) >= minimum, name
        # No profile sets backoff_max_duration: the default is the minimum plus the margin.
        assert _seconds(policy["backoffMaxDuration"]) == (
            minimum + (retries + 1) * MARGIN_PER_ATTEMPT_S
        ), name
    assert retried


def test_the_computed_windows(tmp_path):
    """The numbers the profiles compile to (seconds): (retries + 1) * (timeout + 300) plus the
    backoffs 60 * 2**n (120 * 2**n for the 8-GPU training steps)."""
    tiny = _window(TINY, tmp_path)
    assert tiny["pretrain"] == 3 * (7200 + 300) + 60 + 120 == 22680
    assert set(tiny.values()) == {22680}
    r50 = _window(R50, tmp_path)
    for step in ("pretrain", "finetune", "supervised", "distill"):
        assert r50[step] == 6 * (604800 + 300) + 120 * (1 + 2 + 4 + 8 + 16) == 3634320
    assert r50["shard-part"] == 4 * (86400 + 300) + 60 * (1 + 2 + 4) == 347220


def test_a_non_integer_backoff_factor_is_refused(tmp_path):
    path = _tiny_with(tmp_path, "pretrain", backoff_factor=1.5)
    with pytest.raises(ValueError, match=r"profile simclrv2-tiny, step pretrain: backoff_factor "
                       r"1\.5 must be a whole number >= 1.*Argo.*integer"):  # fmt: skip
        compile_profile(path, tmp_path / "out.yaml")


def test_an_integer_valued_factor_is_fine(tmp_path):
    path = _tiny_with(tmp_path, "pretrain", backoff_factor=3.0, backoff_duration="1m")
    spec, _, _ = _load(compile_profile(path, tmp_path / "out.yaml"))
    policy = _steps(spec)["pretrain"][0]["retryPolicy"]
    assert policy["backoffFactor"] == 3.0
    assert policy["backoffDuration"] == "60s"
    assert _seconds(policy["backoffMaxDuration"]) == 3 * (7200 + 300) + 60 + 180


def test_retries_without_a_timeout_or_a_window_are_refused(tmp_path):
    profile = yaml.safe_load(TINY.read_text())
    del profile["steps"]["default"]["timeout_seconds"]
    expected = (
        r"profile simclrv2-tiny, step \w+: retries: 2 needs timeout_seconds"
        r".*3600s when the profile sets none.*first attempt"
    )
    with pytest.raises(ValueError, match=expected):
        compile_profile(_write(profile, tmp_path), tmp_path / "out.yaml")


def test_retries_without_a_timeout_take_an_explicit_window(tmp_path):
    profile = yaml.safe_load(TINY.read_text())
    del profile["steps"]["default"]["timeout_seconds"]
    profile["steps"]["default"]["backoff_max_duration"] = "12h"
    spec, k8s, _ = _load(compile_profile(_write(profile, tmp_path), tmp_path / "out.yaml"))
    task, executor = _steps(spec)["pretrain"]
    assert task["retryPolicy"]["backoffMaxDuration"] == "43200s"
    assert "activeDeadlineSeconds" not in k8s[executor]


def test_a_window_shorter_than_every_attempt_is_refused_naming_the_minimum(tmp_path):
    path = _tiny_with(tmp_path, "pretrain", backoff_max_duration="6h")  # 21600 s
    with pytest.raises(ValueError, match=r"profile simclrv2-tiny, step pretrain: "
                       r"backoff_max_duration 21600s is too short.*at least 21780s"):  # fmt: skip
        compile_profile(path, tmp_path / "out.yaml")


def test_a_long_enough_explicit_window_is_kept(tmp_path):
    path = _tiny_with(tmp_path, "pretrain", backoff_max_duration=21780)
    spec, _, _ = _load(compile_profile(path, tmp_path / "out.yaml"))
    assert _steps(spec)["pretrain"][0]["retryPolicy"]["backoffMaxDuration"] == "21780s"


def test_timeouts_take_the_same_duration_forms(tmp_path):
    path = _tiny_with(tmp_path, "pretrain", timeout_seconds="3h")
    spec, k8s, _ = _load(compile_profile(path, tmp_path / "out.yaml"))
    task, executor = _steps(spec)["pretrain"]
    assert k8s[executor]["activeDeadlineSeconds"] == "10800"
    assert _seconds(task["retryPolicy"]["backoffMaxDuration"]) == 3 * (10800 + 300) + 180


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(120, 120), ("120", 120), ("120s", 120), ("2m", 120), ("2h", 7200), ("1d", 86400),
     ("1w", 604800), (0, 0)],
)  # fmt: skip
def test_durations_are_seconds_or_a_number_with_a_unit(value, seconds):
    assert parse_seconds(value, "here", "backoff_duration") == seconds


@pytest.mark.parametrize("value", ["1.5h", "-1", -1, "2x", "h", True, 1.5, None])
def test_bad_durations_are_refused(value):
    with pytest.raises(ValueError, match=r"here: timeout_seconds .* is not a duration"):
        parse_seconds(value, "here", "timeout_seconds")


def test_no_compiled_profile_names_a_placeholder_registry_or_a_gpu_model(tmp_path):
    for profile in PROFILES:
        _, k8s, text = _compile(profile, tmp_path)
        assert "example.com" not in text, profile
        assert GPU_PRODUCT not in text, profile  # GPU steps go to any GPU node by default
        assert not any(e.get("imagePullSecret") for e in k8s.values()), profile


def test_gpu_profiles_run_the_image_make_images_builds(tmp_path):
    for profile in PROFILES:
        spec, _, _ = _compile(profile, tmp_path)
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
        cpu_only = profile.stem.startswith("tiny")  # tiny and tiny-2-nodes
        expected = "simclrv2:0.1.0-cpu" if cpu_only else "simclrv2:0.1.0-gpu"
        assert images == {expected}, profile


def test_compile_flags_set_the_image_the_gpu_model_and_the_run_config(tmp_path, capsys):
    image = "ghcr.io/acme/simclrv2:9.9.9-gpu"
    assert main([
        "pipeline", "compile", str(R50), str(TINY), "--output-dir", str(tmp_path),
        "--image", image, "--gpu-product", "NVIDIA-A100-SXM4-80GB",
        "--set", "pretrain.temperature=0.3",
    ]) == 0  # fmt: skip
    assert "[pipeline]" in capsys.readouterr().out
    for profile in (R50, TINY):
        spec, k8s, _ = _load(tmp_path / f"{profile.stem}.yaml")
        executors = spec["deploymentSpec"]["executors"]
        assert {e["container"]["image"] for e in executors.values()} == {image}
        gpu_steps = 0
        for name, (_, executor) in _steps(spec).items():
            selector = k8s[executor].get("nodeSelector", {}).get("labels", {})
            if "accelerator" in executors[executor]["container"].get("resources", {}):
                gpu_steps += 1
                assert selector[GPU_PRODUCT] == "NVIDIA-A100-SXM4-80GB", name
                assert k8s[executor]["tolerations"][0]["key"] == "nvidia.com/gpu", name
            else:
                assert GPU_PRODUCT not in selector, name
        assert gpu_steps == (6 if profile == R50 else 0)
        default = spec["root"]["inputDefinitions"]["parameters"]["run_config"]["defaultValue"]
        assert json.loads(default)["pretrain"]["temperature"] == 0.3


def test_the_profiles_gpu_product_pins_and_the_flag_overrides_it(tmp_path):
    profile = yaml.safe_load(R50.read_text())
    profile["gpu_product"] = "NVIDIA-H100-80GB-HBM3"
    path = _write(profile, tmp_path)
    for flag, expected in ((None, "NVIDIA-H100-80GB-HBM3"), ("NVIDIA-L40S", "NVIDIA-L40S")):
        spec, k8s, _ = _load(compile_profile(path, tmp_path / "out.yaml", gpu_product=flag))
        _, executor = _steps(spec)["pretrain"]
        assert k8s[executor]["nodeSelector"]["labels"] == {GPU_PRODUCT: expected}
        _, executor = _steps(spec)["promote"]
        assert "nodeSelector" not in k8s[executor]


def test_a_bad_run_config_override_is_refused_at_compile_time(tmp_path):
    with pytest.raises(ValueError, match=r"temprature"):
        compile_profile(TINY, tmp_path / "out.yaml", config_overrides=["pretrain.temprature=1"])
