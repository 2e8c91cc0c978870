"""Starting a run of an uploaded pipeline (or a package), and waiting for it to end."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from simclrv2.kfp_client.connection import namespace_of
from simclrv2.kfp_client.errors import PipelineClientError, RunFailedError, server_errors
from simclrv2.kfp_client.lookup import resolve_pipeline

if TYPE_CHECKING:
    import kfp

# Run states after which a run never changes again (V2beta1RuntimeState).
FINAL_RUN_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")


FAILED_RUN_STATES = ("FAILED", "CANCELED")


def run(
    client: kfp.Client,
    pipeline: str,
    experiment: str,
    run_name: str,
    parameters: dict[str, Any],
    version_name: str | None = None,
    wait: bool = False,
    timeout_s: float = 24 * 3600,
    namespace: str | None = None,
    poll_interval_s: float = 10.0,
    service_account: str | None = None,
) -> dict:
    """Start a run of `pipeline` (an uploaded pipeline's name, or a compiled package file) in
    `experiment` (created when missing) with these pipeline parameters.

    With `wait`, poll the run every `poll_interval_s` until it ends and raise RunFailedError
    when it ends FAILED or CANCELED, PipelineClientError after `timeout_s`. `service_account`:
    the Kubernetes service account the run's pods use (default: the server's). Returns run_id,
    run_name, experiment_id, experiment, state, and what was run (pipeline/version or package).
    """
    namespace = namespace_of(client, namespace)
    with server_errors(f"starting run {run_name!r} of {pipeline!r}"):
        target, described = resolve_pipeline(client, pipeline, version_name, namespace)
        found = client.create_experiment(name=experiment, namespace=namespace)
        if "pipeline_package_path" in target:
            started = client.create_run_from_pipeline_package(
                target["pipeline_package_path"],
                arguments=parameters,
                run_name=run_name,
                experiment_id=found.experiment_id,
                service_account=service_account,
            ).run_info
        else:
            started = client.run_pipeline(
                experiment_id=found.experiment_id,
                job_name=run_name,
                params=parameters,
                service_account=service_account,
                **target,
            )
    result = {
        "run_id": started.run_id,
        "run_name": started.display_name,
        "experiment_id": found.experiment_id,
        "experiment": experiment,
        "state": started.state or "PENDING",
        **described,
    }
    if wait:
        final = _wait_for_run(client, started.run_id, timeout_s, poll_interval_s)
        result["state"] = final.state
        if final.state in FAILED_RUN_STATES:
            reason = f": {final.error.message}" if final.error and final.error.message else ""
            message = f"run {started.run_id} ({run_name}) ended {final.state}{reason}"
            raise RunFailedError(started.run_id, final.state, message)
    return result


def _wait_for_run(client: kfp.Client, run_id: str, timeout_s: float, poll_interval_s: float):
    """The run once it reached a final state.

    Not kfp's wait_for_run_completion: it does not stop on CANCELED (it would wait out the
    whole timeout) and its TimeoutError does not say which run or in what state.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        with server_errors(f"waiting for run {run_id}"):
            current = client.get_run(run_id)
        if current.state in FINAL_RUN_STATES:
            return current
        if time.monotonic() >= deadline:
            raise PipelineClientError(
                f"run {run_id} is still {current.state} after {timeout_s:g} s (not stopped)"
            )
        time.sleep(poll_interval_s)
