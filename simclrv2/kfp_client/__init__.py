"""Upload, run and schedule the compiled pipeline on a Kubeflow Pipelines API server.

One idea per module: connection (host, token, namespace), lookup (by name), upload, runs,
schedule, errors. This is the only part of the package that talks to a KFP API server,
through `kfp.Client` (kfp 2.17, REST API v2beta1). kfp is imported inside the functions,
never when these modules are imported, so that the method library and the CLI start without
it.

    client = connect("http://localhost:8888", namespace=None)   # token from KF_PIPELINES_TOKEN
    upload(client, "pipelines/compiled/tiny.yaml", "simclrv2")
    run(client, "simclrv2", "Default", "tiny-1", {"label_fraction": 0.01}, wait=True)
    schedule(client, "simclrv2", "Default", "nightly", "0 0 2 * * *", {})
    set_schedule_enabled(client, "nightly", False)

Environment (read by `connect` and the CLI flags' defaults):
  KFP_HOST            the API server URL; kfp's own KF_PIPELINES_ENDPOINT is the fallback
  KF_PIPELINES_TOKEN  the bearer token when neither a token nor a token file is given. kfp 2.17
                      itself reads no token variable (it takes `existing_token=`, and in a pod
                      the projected service-account token named by KF_PIPELINES_SA_TOKEN_PATH);
                      the name follows kfp's KF_PIPELINES_* prefix.
The token is sent as `Authorization: Bearer ...` and is never printed, logged or put in an
error message.
"""

from simclrv2.kfp_client.connection import connect
from simclrv2.kfp_client.defaults import (
    DEFAULT_EXPERIMENT,
    DEFAULT_PIPELINE_NAME,
    HOST_ENV,
    KFP_HOST_ENV,
    TOKEN_ENV,
)
from simclrv2.kfp_client.errors import PipelineClientError, PipelineRequestError, RunFailedError
from simclrv2.kfp_client.parameters import parse_param
from simclrv2.kfp_client.runs import FAILED_RUN_STATES, FINAL_RUN_STATES, run
from simclrv2.kfp_client.schedule import schedule, set_schedule_enabled, validate_cron
from simclrv2.kfp_client.upload import upload
from simclrv2.kfp_client.version_name import default_version_name

__all__ = [
    "DEFAULT_EXPERIMENT",
    "DEFAULT_PIPELINE_NAME",
    "FAILED_RUN_STATES",
    "FINAL_RUN_STATES",
    "HOST_ENV",
    "KFP_HOST_ENV",
    "TOKEN_ENV",
    "PipelineClientError",
    "PipelineRequestError",
    "RunFailedError",
    "connect",
    "default_version_name",
    "parse_param",
    "run",
    "schedule",
    "set_schedule_enabled",
    "upload",
    "validate_cron",
]
