"""Finding pipelines, versions and recurring runs by their display name (v2beta1 filters)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from simclrv2.kfp_client.errors import PipelineRequestError

if TYPE_CHECKING:
    import kfp


def name_filter(name: str) -> str:
    """A v2beta1 Filter (JSON) that keeps the resources whose display name is `name`."""
    predicate = {"operation": "EQUALS", "key": "display_name", "string_value": name}
    return json.dumps({"predicates": [predicate]})


def list_all(list_page, items_field: str, **query) -> list:
    """Every item of a paginated v2beta1 list call."""
    items, page_token = [], ""
    while True:
        page = list_page(page_token=page_token, page_size=100, **query)
        items.extend(getattr(page, items_field) or [])  # an empty list comes back as None
        page_token = page.next_page_token or ""
        if not page_token:
            return items


def find_pipeline(client: kfp.Client, name: str, namespace: str | None):
    """The pipeline named `name`, or None."""
    found = list_all(
        client.list_pipelines, "pipelines", filter=name_filter(name), namespace=namespace
    )
    # The filter is checked again here: an older server may ignore an unknown filter key.
    found = [pipeline for pipeline in found if pipeline.display_name == name]
    if len(found) > 1:
        raise PipelineRequestError(f"{len(found)} pipelines are named {name!r}: rename all but one")
    return found[0] if found else None


def find_version(client: kfp.Client, pipeline_id: str, version_name: str | None):
    """The version named `version_name` of a pipeline (the newest one when None), or None."""
    if version_name is None:
        page = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
        return (page.pipeline_versions or [None])[0]
    versions = list_all(
        client.list_pipeline_versions,
        "pipeline_versions",
        pipeline_id=pipeline_id,
        filter=name_filter(version_name),
    )
    versions = [version for version in versions if version.display_name == version_name]
    return versions[0] if versions else None


def find_recurring_runs(client: kfp.Client, job_name: str, namespace: str | None) -> list:
    """Every recurring run named `job_name` (in the namespace, across experiments)."""
    found = list_all(
        client.list_recurring_runs,
        "recurring_runs",
        filter=name_filter(job_name),
        namespace=namespace,
    )
    return [job for job in found if job.display_name == job_name]


def resolve_pipeline(
    client: kfp.Client, pipeline: str, version_name: str | None, namespace: str | None
) -> tuple[dict, dict]:
    """(kfp.Client keyword arguments, description) for a package file or an uploaded pipeline.

    `pipeline` is a compiled package when such a file exists, else the name of an uploaded
    pipeline, whose version `version_name` (default: the newest) is used.
    """
    if Path(pipeline).is_file():
        return {"pipeline_package_path": pipeline}, {"package": pipeline}
    found = find_pipeline(client, pipeline, namespace)
    if found is None:
        raise PipelineRequestError(
            f"no pipeline named {pipeline!r} on the server (and no such package file): "
            "upload it first with `simclrv2 pipeline upload`"
        )
    version = find_version(client, found.pipeline_id, version_name)
    if version is None:
        which = f"no version {version_name!r}" if version_name else "no version"
        raise PipelineRequestError(
            f"pipeline {pipeline!r} has {which}: upload one with `simclrv2 pipeline upload`"
        )
    kwargs = {"pipeline_id": found.pipeline_id, "version_id": version.pipeline_version_id}
    described = {
        "pipeline_id": found.pipeline_id,
        "pipeline_name": found.display_name,
        "version_id": version.pipeline_version_id,
        "version_name": version.display_name,
    }
    return kwargs, described
