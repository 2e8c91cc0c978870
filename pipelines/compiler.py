"""Compile a profile into the pipeline YAML users upload (deterministic output)."""

from collections.abc import Sequence
from pathlib import Path

import yaml
from kfp import compiler

from pipelines.machine_sizing import check_fp32_cpu_parameters
from pipelines.placement import step_nodes
from pipelines.simclrv2_pipeline import build_pipeline

REQUIRED = ("name", "image", "work_root", "production", "s3", "parameters", "run_config")


def load_profile(path: str | Path) -> dict:
    profile = yaml.safe_load(Path(path).read_text())
    missing = [key for key in REQUIRED if key not in (profile or {})]
    if missing:
        raise ValueError(f"profile {path} lacks {missing}; see pipelines/profiles/tiny.yaml")
    _check_run_config(profile)
    for step in profile.get("steps", {}):
        if step != "default":
            step_nodes(profile, step)  # a bad node count fails here, not on the cluster
    check_fp32_cpu_parameters(profile, str(path))
    if int(profile.get("shard_parts", 1)) < 1:
        raise ValueError(f"profile {path}: shard_parts must be >= 1")
    gpu_product = profile.get("gpu_product")
    if gpu_product is not None and not (isinstance(gpu_product, str) and gpu_product.strip()):
        raise ValueError(
            f"profile {path}: gpu_product must be a GPU model as the node label "
            f"nvidia.com/gpu.product spells it (e.g. NVIDIA-H100-80GB-HBM3), or unset"
        )
    return profile


def _check_run_config(profile: dict) -> None:
    # The run config is validated here, at compile time, not when a cluster runs it.
    from simclrv2.config.loading import from_dict
    from simclrv2.config.run_config import RunConfig

    from_dict(RunConfig, profile["run_config"])


def compile_profile(
    profile_path: str | Path,
    output: str | Path,
    image: str | None = None,
    gpu_product: str | None = None,
    config_overrides: Sequence[str] = (),
) -> Path:
    """`image` replaces the profile's image, `gpu_product` its gpu_product (the GPU model
    every GPU step is pinned to) and `config_overrides` ("section.key=value") change its
    run config, the default of the pipeline's run_config parameter."""
    profile = load_profile(profile_path)
    if image:
        profile["image"] = image
    if gpu_product:
        profile["gpu_product"] = gpu_product
    if config_overrides:
        from simclrv2.config.loading import apply_overrides

        profile["run_config"] = apply_overrides(profile["run_config"], list(config_overrides))
        _check_run_config(profile)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(profile), str(output))
    return output
