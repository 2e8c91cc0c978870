"""Recurring runs: create (or replace) one on a 6-field cron schedule, enable or disable it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from simclrv2.kfp_client.connection import namespace_of
from simclrv2.kfp_client.errors import PipelineRequestError, server_errors
from simclrv2.kfp_client.lookup import find_recurring_runs, resolve_pipeline

if TYPE_CHECKING:
    import kfp

# Predefined schedules of the cron library KFP uses (robfig/cron), e.g. "@daily", "@every 1h".
_CRON_DESCRIPTOR = re.compile(r"@(yearly|annually|monthly|weekly|daily|midnight|hourly|every \S+)")


def validate_cron(cron: str) -> str:
    """The cron expression with single spaces; ValueError unless it has KFP's 6 fields
    (second minute hour day-of-month month day-of-week) or is a descriptor like '@daily'."""
    fields = cron.split()
    if cron.strip().startswith("@"):
        if not _CRON_DESCRIPTOR.fullmatch(" ".join(fields)):
            raise ValueError(f"cron {cron!r}: unknown descriptor; use e.g. @daily or @every 6h")
        return " ".join(fields)
    if len(fields) == 5:
        # KFP's scheduler reads the first field as seconds, so a 5-field crontab would not mean
        # what it says: refuse it rather than schedule at the wrong times.
        raise ValueError(
            f"cron {cron!r} has 5 fields; KFP cron has 6, seconds first: prepend the seconds "
            f"field, e.g. {'0 ' + ' '.join(fields)!r}"
        )
    if len(fields) != 6:
        raise ValueError(
            f"cron {cron!r} has {len(fields)} fields; KFP cron has 6: "
            "second minute hour day-of-month month day-of-week, e.g. '0 0 2 * * *'"
        )
    return " ".join(fields)


def schedule(
    client: kfp.Client,
    pipeline_name: str,
    experiment: str,
    job_name: str,
    cron: str,
    parameters: dict[str, Any],
    max_concurrency: int = 1,
    no_catchup: bool = True,
    enabled: bool = True,
    replace: bool = False,
    version_name: str | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
) -> dict:
    """Create the recurring run `job_name` of an uploaded pipeline's version `version_name`
    (default: the newest; a package file path works too) on a 6-field cron schedule.

    Recurring run names are treated as unique: an existing one of the same name is an error,
    unless `replace`, which deletes it first. Returns recurring_run_id, job_name, cron, mode,
    max_concurrency, no_catchup, experiment_id, replaced (ids) and what is scheduled.
    """
    cron = validate_cron(cron)
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
    namespace = namespace_of(client, namespace)
    with server_errors(f"scheduling {job_name!r} of {pipeline_name!r}"):
        target, described = resolve_pipeline(client, pipeline_name, version_name, namespace)
        existing = find_recurring_runs(client, job_name, namespace)
        if existing and not replace:
            ids = ", ".join(job.recurring_run_id for job in existing)
            raise PipelineRequestError(
                f"a recurring run named {job_name!r} exists already ({ids}): "
                "pass --replace to replace it"
            )
        for job in existing:
            client.delete_recurring_run(job.recurring_run_id)
        found = client.create_experiment(name=experiment, namespace=namespace)
        created = client.create_recurring_run(
            experiment_id=found.experiment_id,
            job_name=job_name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=no_catchup,
            params=parameters,
            enabled=enabled,
            service_account=service_account,
            **target,
        )
    return {
        "recurring_run_id": created.recurring_run_id,
        "job_name": created.display_name,
        "cron": cron,
        "mode": created.mode or ("ENABLE" if enabled else "DISABLE"),
        "max_concurrency": max_concurrency,
        "no_catchup": no_catchup,
        "experiment_id": found.experiment_id,
        "experiment": experiment,
        "replaced": [job.recurring_run_id for job in existing],
        **described,
    }


def set_schedule_enabled(
    client: kfp.Client, job_name: str, enabled: bool, namespace: str | None = None
) -> dict:
    """Enable or disable the recurring run named `job_name`. Returns recurring_run_id,
    job_name and enabled."""
    namespace = namespace_of(client, namespace)
    verb = "enabling" if enabled else "disabling"
    with server_errors(f"{verb} recurring run {job_name!r}"):
        found = find_recurring_runs(client, job_name, namespace)
        if len(found) != 1:
            what = "no recurring run" if not found else f"{len(found)} recurring runs"
            raise PipelineRequestError(
                f"{verb} {job_name!r}: {what} with that name (`--cron` creates one)"
            )
        job_id = found[0].recurring_run_id
        if enabled:
            client.enable_recurring_run(job_id)
        else:
            client.disable_recurring_run(job_id)
    return {"recurring_run_id": job_id, "job_name": job_name, "enabled": enabled}
