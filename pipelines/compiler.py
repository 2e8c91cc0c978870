"""Compile a profile into the pipeline YAML users upload (deterministic output)."""

from pathlib import Path

import yaml
from kfp import compiler

from pipelines.simclrv2_pipeline import build_pipeline

REQUIRED = ("name", "image", "work_root", "production", "s3", "parameters", "run_config")


def load_profile(path: str | Path) -> dict:
    profile = yaml.safe_load(Path(path).read_text())
    missing = [key for key in REQUIRED if key not in (profile or {})]
    if missing:
        raise ValueError(f"profile {path} lacks {missing}; see pipelines/profiles/tiny.yaml")
    # The run config is validated here, at compile time, not when a cluster runs it.
    from simclrv2.config.loading import from_dict
    from simclrv2.config.run_config import RunConfig

    from_dict(RunConfig, profile["run_config"])
    if int(profile.get("shard_parts", 1)) < 1:
        raise ValueError(f"profile {path}: shard_parts must be >= 1")
    return profile


def compile_profile(profile_path: str | Path, output: str | Path) -> Path:
    profile = load_profile(profile_path)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(profile), str(output))
    return output
