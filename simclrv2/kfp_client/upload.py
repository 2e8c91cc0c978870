"""Uploading a compiled pipeline: a new pipeline, or a new version of it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from simclrv2.kfp_client.connection import namespace_of
from simclrv2.kfp_client.errors import PipelineRequestError, server_errors
from simclrv2.kfp_client.lookup import find_pipeline, find_version
from simclrv2.kfp_client.version_name import default_version_name

if TYPE_CHECKING:
    import kfp


def upload(
    client: kfp.Client,
    package_path: str,
    pipeline_name: str,
    version_name: str | None = None,
    description: str = "",
    namespace: str | None = None,
) -> dict:
    """Upload a compiled pipeline: a new pipeline named `pipeline_name` when there is none,
    else a new version of it named `version_name` (default: `default_version_name`).

    A new pipeline's first version is the one the server creates with it (KFP names it after
    the pipeline). Returns pipeline_id, pipeline_name, version_id, version_name and created
    ("pipeline" or "version").
    """
    if not Path(package_path).is_file():
        raise ValueError(
            f"no pipeline package at {package_path}: compile it first (simclrv2 pipeline compile)"
        )
    namespace = namespace_of(client, namespace)
    action = f"uploading {package_path} as pipeline {pipeline_name!r}"
    with server_errors(action):
        pipeline = find_pipeline(client, pipeline_name, namespace)
        if pipeline is None:
            pipeline = client.upload_pipeline(
                package_path, pipeline_name, description=description, namespace=namespace
            )
            version = find_version(client, pipeline.pipeline_id, None)
            return {
                "pipeline_id": pipeline.pipeline_id,
                "pipeline_name": pipeline.display_name,
                "version_id": version.pipeline_version_id if version else None,
                "version_name": version.display_name if version else None,
                "created": "pipeline",
            }
        version_name = version_name or default_version_name(package_path)
        existing = find_version(client, pipeline.pipeline_id, version_name)
        if existing is not None:
            raise PipelineRequestError(
                f"{action}: version {version_name!r} exists already "
                f"({existing.pipeline_version_id}); commit your changes or pass --version-name"
            )
        version = client.upload_pipeline_version(
            package_path,
            version_name,
            pipeline_id=pipeline.pipeline_id,
            description=description or None,
        )
    return {
        "pipeline_id": pipeline.pipeline_id,
        "pipeline_name": pipeline.display_name,
        "version_id": version.pipeline_version_id,
        "version_name": version.display_name,
        "created": "version",
    }
