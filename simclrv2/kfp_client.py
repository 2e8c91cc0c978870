"""Upload, run and schedule the compiled pipeline on a Kubeflow Pipelines API server.

The only module of the package that talks to a KFP API server, through `kfp.Client` (kfp 2.17,
REST API v2beta1). kfp is imported inside the functions, never when this module is imported, so
that the method library and the CLI start without it.

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

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simclrv2 import __version__
from simclrv2.errors import RUNTIME_EXIT, USAGE_EXIT, UsageError

if TYPE_CHECKING:
    import kfp

HOST_ENV = "KFP_HOST"
KFP_HOST_ENV = "KF_PIPELINES_ENDPOINT"  # kfp.Client's own variable, used when KFP_HOST is unset
TOKEN_ENV = "KF_PIPELINES_TOKEN"
DEFAULT_PIPELINE_NAME = "simclrv2"
DEFAULT_EXPERIMENT = "Default"  # the experiment every KFP installation has
# Run states after which a run never changes again (V2beta1RuntimeState).
FINAL_RUN_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")
FAILED_RUN_STATES = ("FAILED", "CANCELED")
# Predefined schedules of the cron library KFP uses (robfig/cron), e.g. "@daily", "@every 1h".
_CRON_DESCRIPTOR = re.compile(r"@(yearly|annually|monthly|weekly|daily|midnight|hourly|every \S+)")


class PipelineClientError(RuntimeError):
    """A KFP API call failed: which call, the HTTP status and the server's message."""


class PipelineRequestError(PipelineClientError, UsageError):
    """The request cannot succeed as given (an unknown name, a refused token, a bad argument):
    the user must change it. The CLI exits 2 for these, 1 for the other API failures."""


# HTTP answers that say the request itself is wrong, not the server.
_REQUEST_ERROR_STATUSES = frozenset({400, 401, 403, 404, 409})


class RunFailedError(PipelineClientError):
    """A run that was waited for ended in FAILED or CANCELED."""

    def __init__(self, run_id: str, state: str, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.state = state


# ---------------------------------------------------------------------------------------------
# Connecting


def connect(
    host: str | None,
    namespace: str | None,
    token: str | None = None,
    token_file: str | None = None,
    verify_ssl: bool = True,
) -> kfp.Client:
    """A `kfp.Client` for the API server at `host` (default $KFP_HOST, then
    $KF_PIPELINES_ENDPOINT), with the bearer token from `token`, else `token_file`, else
    $KF_PIPELINES_TOKEN, else none (a port-forwarded single-user installation needs none).

    `namespace` is the user's profile namespace of a multi-user installation; None for a
    single-user one.
    """
    host = host or os.environ.get(HOST_ENV) or os.environ.get(KFP_HOST_ENV)
    if not host:
        raise ValueError(
            f"no KFP API server: pass --host or set {HOST_ENV}, e.g. http://localhost:8888 "
            "after `kubectl -n kubeflow port-forward svc/ml-pipeline 8888:8888`"
        )
    token = _resolve_token(token, token_file)

    import kfp

    with warnings.catch_warnings():
        # kfp warns on every Client() that it needs a v2 server; this module only talks v2beta1.
        warnings.filterwarnings("ignore", "This client only works", FutureWarning)
        # kfp.Client ignores namespace="kubeflow" (its default) and checks the server's health
        # in its constructor when no namespace is set: connection errors surface here.
        with _server_errors(f"connecting to the KFP API server at {host}"):
            try:
                return kfp.Client(
                    host=host,
                    namespace=namespace or "kubeflow",
                    existing_token=token,
                    verify_ssl=verify_ssl,
                )
            except TimeoutError as error:  # kfp gives up after 5 failed health checks
                raise PipelineClientError(
                    f"the KFP API server at {host} did not answer its health check "
                    "(/apis/v2beta1/healthz): check --host and the token"
                ) from error


def _resolve_token(token: str | None, token_file: str | None) -> str | None:
    """The bearer token: the argument, else the file's content, else $KF_PIPELINES_TOKEN."""
    if token:
        return token
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"cannot read the token file {token_file}: {error.strerror}") from None
        if not text:
            raise ValueError(f"the token file {token_file} is empty")
        return text
    return os.environ.get(TOKEN_ENV) or None


@contextlib.contextmanager
def _server_errors(action: str) -> Iterator[None]:
    """Turn kfp's API and connection errors into a PipelineClientError that says `action`."""
    import kfp_server_api
    import urllib3

    try:
        # kfp prints "... details: <link>" lines on stdout; they go to stderr so that stdout
        # carries only our one-line summaries (scripts parse them).
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except kfp_server_api.ApiException as error:
        kind = (
            PipelineRequestError if error.status in _REQUEST_ERROR_STATUSES else PipelineClientError
        )
        raise kind(f"{action}: {_describe_api_error(error)}") from error
    except urllib3.exceptions.HTTPError as error:
        reason = getattr(error, "reason", None) or error
        raise PipelineClientError(
            f"{action}: cannot reach the KFP API server ({reason}); check --host or "
            f"${HOST_ENV} and that the server (or its kubectl port-forward) is up"
        ) from error


def _describe_api_error(error) -> str:
    """'HTTP 404 Not Found: <the server's message>' from an ApiException, without headers."""
    if not error.status:  # raised by the client itself (e.g. a TLS error): no HTTP answer
        return str(error.reason)
    detail = ""
    if error.body:
        body = error.body if isinstance(error.body, str) else error.body.decode("utf-8", "replace")
        try:
            parsed = json.loads(body)
            detail = parsed.get("message") or parsed.get("error") or ""
        except (ValueError, AttributeError):
            detail = body.strip()[:300]
    text = f"HTTP {error.status} {error.reason or ''}".rstrip()
    if error.status in (401, 403):
        text += f" (check the token: --token-file or ${TOKEN_ENV}, and --namespace)"
    return f"{text}: {detail}" if detail else text


def _namespace(client: kfp.Client, namespace: str | None) -> str | None:
    """The namespace to send: the argument, else the client's, else None (single-user)."""
    return namespace or client.get_user_namespace() or None


# ---------------------------------------------------------------------------------------------
# Looking things up by name


def _name_filter(name: str) -> str:
    """A v2beta1 Filter (JSON) that keeps the resources whose display name is `name`."""
    predicate = {"operation": "EQUALS", "key": "display_name", "string_value": name}
    return json.dumps({"predicates": [predicate]})


def _list_all(list_page, items_field: str, **query) -> list:
    """Every item of a paginated v2beta1 list call."""
    items, page_token = [], ""
    while True:
        page = list_page(page_token=page_token, page_size=100, **query)
        items.extend(getattr(page, items_field) or [])  # an empty list comes back as None
        page_token = page.next_page_token or ""
        if not page_token:
            return items


def _find_pipeline(client: kfp.Client, name: str, namespace: str | None):
    """The pipeline named `name`, or None."""
    found = _list_all(
        client.list_pipelines, "pipelines", filter=_name_filter(name), namespace=namespace
    )
    # The filter is checked again here: an older server may ignore an unknown filter key.
    found = [pipeline for pipeline in found if pipeline.display_name == name]
    if len(found) > 1:
        raise PipelineRequestError(f"{len(found)} pipelines are named {name!r}: rename all but one")
    return found[0] if found else None


def _find_version(client: kfp.Client, pipeline_id: str, version_name: str | None):
    """The version named `version_name` of a pipeline (the newest one when None), or None."""
    if version_name is None:
        page = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
        return (page.pipeline_versions or [None])[0]
    versions = _list_all(
        client.list_pipeline_versions,
        "pipeline_versions",
        pipeline_id=pipeline_id,
        filter=_name_filter(version_name),
    )
    versions = [version for version in versions if version.display_name == version_name]
    return versions[0] if versions else None


def _find_recurring_runs(client: kfp.Client, job_name: str, namespace: str | None) -> list:
    """Every recurring run named `job_name` (in the namespace, across experiments)."""
    found = _list_all(
        client.list_recurring_runs,
        "recurring_runs",
        filter=_name_filter(job_name),
        namespace=namespace,
    )
    return [job for job in found if job.display_name == job_name]


# ---------------------------------------------------------------------------------------------
# Upload


def default_version_name(
    package_path: str | Path | None = None, source_dir: str | Path | None = None
) -> str:
    """'<simclrv2 version>-<git short sha>' of the code in `source_dir` (default: this package's
    folder), with '-dirty' when tracked files have uncommitted changes (as `git describe
    --dirty`). Without git: '<version>-<first 8 hex of the package's sha256>', or the bare
    version when there is no package either.
    """
    source_dir = Path(source_dir) if source_dir else Path(__file__).resolve().parent
    try:
        sha = _git(source_dir, "rev-parse", "--short", "HEAD")
        changes = _git(source_dir, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):  # no git, or not a repository
        if package_path is None:
            return __version__
        digest = hashlib.sha256(Path(package_path).read_bytes()).hexdigest()
        return f"{__version__}-{digest[:8]}"
    return f"{__version__}-{sha}" + ("-dirty" if changes else "")


def _git(directory: Path, *arguments: str) -> str:
    """The stripped output of one git command run in `directory`."""
    completed = subprocess.run(
        ["git", "-C", str(directory), *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return completed.stdout.strip()


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
    namespace = _namespace(client, namespace)
    action = f"uploading {package_path} as pipeline {pipeline_name!r}"
    with _server_errors(action):
        pipeline = _find_pipeline(client, pipeline_name, namespace)
        if pipeline is None:
            pipeline = client.upload_pipeline(
                package_path, pipeline_name, description=description, namespace=namespace
            )
            version = _find_version(client, pipeline.pipeline_id, None)
            return {
                "pipeline_id": pipeline.pipeline_id,
                "pipeline_name": pipeline.display_name,
                "version_id": version.pipeline_version_id if version else None,
                "version_name": version.display_name if version else None,
                "created": "pipeline",
            }
        version_name = version_name or default_version_name(package_path)
        existing = _find_version(client, pipeline.pipeline_id, version_name)
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


# ---------------------------------------------------------------------------------------------
# Run


def _resolve_pipeline(
    client: kfp.Client, pipeline: str, version_name: str | None, namespace: str | None
) -> tuple[dict, dict]:
    """(kfp.Client keyword arguments, description) for a package file or an uploaded pipeline.

    `pipeline` is a compiled package when such a file exists, else the name of an uploaded
    pipeline, whose version `version_name` (default: the newest) is used.
    """
    if Path(pipeline).is_file():
        return {"pipeline_package_path": pipeline}, {"package": pipeline}
    found = _find_pipeline(client, pipeline, namespace)
    if found is None:
        raise PipelineRequestError(
            f"no pipeline named {pipeline!r} on the server (and no such package file): "
            "upload it first with `simclrv2 pipeline upload`"
        )
    version = _find_version(client, found.pipeline_id, version_name)
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
    namespace = _namespace(client, namespace)
    with _server_errors(f"starting run {run_name!r} of {pipeline!r}"):
        target, described = _resolve_pipeline(client, pipeline, version_name, namespace)
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
        with _server_errors(f"waiting for run {run_id}"):
            current = client.get_run(run_id)
        if current.state in FINAL_RUN_STATES:
            return current
        if time.monotonic() >= deadline:
            raise PipelineClientError(
                f"run {run_id} is still {current.state} after {timeout_s:g} s (not stopped)"
            )
        time.sleep(poll_interval_s)


# ---------------------------------------------------------------------------------------------
# Schedule


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
    namespace = _namespace(client, namespace)
    with _server_errors(f"scheduling {job_name!r} of {pipeline_name!r}"):
        target, described = _resolve_pipeline(client, pipeline_name, version_name, namespace)
        existing = _find_recurring_runs(client, job_name, namespace)
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
    namespace = _namespace(client, namespace)
    verb = "enabling" if enabled else "disabling"
    with _server_errors(f"{verb} recurring run {job_name!r}"):
        found = _find_recurring_runs(client, job_name, namespace)
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


# ---------------------------------------------------------------------------------------------
# Command line: `simclrv2 pipeline upload | run | schedule`

_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_param(text: str) -> tuple[str, Any]:
    """'key=value' -> (key, value), the value read as a YAML scalar: 3 -> int, 0.1 -> float,
    true -> bool, anything else -> str. 1e-3 is a float too (YAML 1.1 reads it as a string)."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param {text!r} must look like KEY=VALUE")
    if _EXPONENT_NUMBER.fullmatch(raw.strip()):
        return key, float(raw)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if not isinstance(value, (str, int, float, bool)):
        # Lists, mappings, null and dates are not scalars a pipeline parameter takes as typed;
        # pass the text through unchanged.
        value = raw
    return key, value


def _add_connection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "KFP API server",
        f"the token comes from --token-file, else ${TOKEN_ENV}; it is never printed",
    )
    group.add_argument("--host", help=f"API server URL (default ${HOST_ENV})")
    group.add_argument("--namespace", help="profile namespace (multi-user installations)")
    group.add_argument("--token-file", help="file holding the bearer token")
    group.add_argument(
        "--no-verify-ssl", action="store_true", help="do not verify the server's certificate"
    )


def _add_pipeline_flags(parser: argparse.ArgumentParser, package_required: bool) -> None:
    parser.add_argument(
        "--package",
        required=package_required,
        help="the compiled pipeline YAML, e.g. pipelines/compiled/tiny.yaml",
    )
    parser.add_argument(
        "--pipeline-name",
        default=DEFAULT_PIPELINE_NAME,
        help=f"the pipeline's name on the server (default {DEFAULT_PIPELINE_NAME})",
    )
    parser.add_argument("--version-name", help="pipeline version (default: see the command)")


def _add_parameter_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        type=parse_param,
        metavar="KEY=VALUE",
        help="a pipeline parameter, the value read as a YAML scalar (repeatable)",
    )
    parser.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"experiment name, created when missing (default {DEFAULT_EXPERIMENT})",
    )


def add_pipeline_client_commands(pipeline_subparsers) -> None:
    """Add `upload`, `run` and `schedule` to the sub-commands of `simclrv2 pipeline`
    (`pipeline_subparsers` is that command's `add_subparsers()` object)."""
    upload_parser = pipeline_subparsers.add_parser(
        "upload",
        help="upload the compiled pipeline (a new version when the pipeline exists)",
        description="Upload a compiled pipeline YAML to a KFP API server: a new pipeline, or a "
        "new version of it named <simclrv2 version>-<git sha>[-dirty] unless --version-name.",
    )
    _add_pipeline_flags(upload_parser, package_required=True)
    upload_parser.add_argument("--description", default="")
    _add_connection_flags(upload_parser)
    upload_parser.set_defaults(handler=_run_upload)

    run_parser = pipeline_subparsers.add_parser(
        "run",
        help="start a run of the uploaded pipeline (or of a package) and optionally wait",
        description="Start a run of the pipeline --pipeline-name (its newest version unless "
        "--version-name) or, with --package, of that compiled file without uploading it.",
    )
    _add_pipeline_flags(run_parser, package_required=False)
    _add_parameter_flags(run_parser)
    run_parser.add_argument("--run-name", help="default: <pipeline name> <date time>")
    run_parser.add_argument("--wait", action="store_true", help="wait until the run ends")
    _add_service_account_flag(run_parser)
    run_parser.add_argument(
        "--timeout", type=float, default=24 * 3600, help="seconds to --wait (default 1 day)"
    )
    _add_connection_flags(run_parser)
    run_parser.set_defaults(handler=_run_run)

    schedule_parser = pipeline_subparsers.add_parser(
        "schedule",
        help="create, replace, enable or disable a recurring run (6-field cron)",
        description="With --cron: create the recurring run --job-name of the pipeline's newest "
        "version (or --version-name); --replace deletes an existing one of that name first. "
        "Without --cron: --enable or --disable the existing recurring run --job-name.",
        epilog="examples:\n"
        "  simclrv2 pipeline schedule --job-name nightly --cron '0 0 2 * * *'\n"
        "  simclrv2 pipeline schedule --job-name nightly --cron '0 30 3 * * 1-5' --replace\n"
        "  simclrv2 pipeline schedule --job-name nightly --disable",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_pipeline_flags(schedule_parser, package_required=False)
    _add_parameter_flags(schedule_parser)
    schedule_parser.add_argument("--job-name", required=True, help="the recurring run's name")
    schedule_parser.add_argument(
        "--cron", help="6 fields, seconds first: 'SEC MIN HOUR DOM MONTH DOW', e.g. '0 0 2 * * *'"
    )
    schedule_parser.add_argument("--max-concurrency", type=int, default=1)
    schedule_parser.add_argument(
        "--catchup", action="store_true", help="backfill missed runs (default: no catch-up)"
    )
    schedule_parser.add_argument("--replace", action="store_true")
    _add_service_account_flag(schedule_parser)
    switch = schedule_parser.add_mutually_exclusive_group()
    switch.add_argument("--enable", dest="enabled", action="store_const", const=True)
    switch.add_argument("--disable", dest="enabled", action="store_const", const=False)
    _add_connection_flags(schedule_parser)
    schedule_parser.set_defaults(handler=_run_schedule)


def _add_service_account_flag(parser) -> None:
    parser.add_argument(
        "--service-account",
        help="Kubernetes service account of the run's pods (manifests/: "
        "simclrv2-pipeline-runner; default: the server's pipeline-runner)",
    )


def _client_from_args(args) -> kfp.Client:
    return connect(
        args.host, args.namespace, token_file=args.token_file, verify_ssl=not args.no_verify_ssl
    )


def _reporting_errors(handler):
    """Run a command handler; a failed API call becomes one line on stderr and exit status 2
    (the request must change) or 1 (the server failed). With --debug the error goes on to
    the CLI, which shows the traceback."""

    def wrapped(args) -> int:
        try:
            return handler(args)
        except PipelineClientError as error:
            if getattr(args, "debug", False):
                raise
            print(f"simclrv2: error: {error}", file=sys.stderr)
            return USAGE_EXIT if isinstance(error, UsageError) else RUNTIME_EXIT

    wrapped.__doc__ = handler.__doc__
    return wrapped


@_reporting_errors
def _run_upload(args) -> int:
    """`simclrv2 pipeline upload`."""
    client = _client_from_args(args)
    result = upload(
        client, args.package, args.pipeline_name, args.version_name, args.description,
        namespace=args.namespace,
    )  # fmt: skip
    print(
        f"[pipeline upload] pipeline {result['pipeline_name']} ({result['pipeline_id']}) "
        f"version {result['version_name']} ({result['version_id']}): new {result['created']}"
    )
    return 0


@_reporting_errors
def _run_run(args) -> int:
    """`simclrv2 pipeline run`."""
    pipeline = args.package or args.pipeline_name
    run_name = args.run_name or (
        f"{args.pipeline_name} {datetime.datetime.now():%Y-%m-%d %H:%M:%S}"
    )
    client = _client_from_args(args)
    result = run(
        client, pipeline, args.experiment, run_name, dict(args.param),
        version_name=args.version_name, wait=args.wait, timeout_s=args.timeout,
        namespace=args.namespace, service_account=args.service_account,
    )  # fmt: skip
    what = result.get("package") or f"{result['pipeline_name']} {result['version_name']}"
    print(
        f"[pipeline run] run {result['run_id']} ({result['run_name']}) of {what} in "
        f"experiment {result['experiment']} ({result['experiment_id']}): {result['state']}"
    )
    return 0


@_reporting_errors
def _run_schedule(args) -> int:
    """`simclrv2 pipeline schedule`."""
    if args.cron is None:
        if args.enabled is None:
            raise ValueError("pass --cron to create a schedule, or --enable / --disable")
        client = _client_from_args(args)
        result = set_schedule_enabled(client, args.job_name, args.enabled, args.namespace)
        state = "enabled" if result["enabled"] else "disabled"
        print(f"[pipeline schedule] {result['job_name']} ({result['recurring_run_id']}): {state}")
        return 0
    validate_cron(args.cron)  # before connecting: a bad schedule needs no server to be refused
    # Recurring retraining trains only on a new dataset version or a changed configuration,
    # unless the user says otherwise (--param retrain=always).
    parameters = {"retrain": "on-new-data", **dict(args.param)}
    client = _client_from_args(args)
    result = schedule(
        client, args.package or args.pipeline_name, args.experiment, args.job_name, args.cron,
        parameters, max_concurrency=args.max_concurrency, no_catchup=not args.catchup,
        enabled=args.enabled is not False, replace=args.replace, version_name=args.version_name,
        namespace=args.namespace, service_account=args.service_account,
    )  # fmt: skip
    replaced = f", replaced {', '.join(result['replaced'])}" if result["replaced"] else ""
    catchup = "no catch-up" if result["no_catchup"] else "catch-up"
    print(
        f"[pipeline schedule] {result['job_name']} ({result['recurring_run_id']}) "
        f"cron '{result['cron']}', max concurrency {result['max_concurrency']}, {catchup}, "
        f"{result['mode']} in experiment {result['experiment']}{replaced}, "
        f"retrain={parameters['retrain']}"
    )
    return 0
