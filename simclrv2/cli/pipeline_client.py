"""`simclrv2 pipeline upload | run | schedule`: the KFP client's commands."""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import TYPE_CHECKING

from simclrv2.errors import RUNTIME_EXIT, USAGE_EXIT, UsageError
from simclrv2.kfp_client.connection import connect
from simclrv2.kfp_client.defaults import (
    DEFAULT_EXPERIMENT,
    DEFAULT_PIPELINE_NAME,
    HOST_ENV,
    TOKEN_ENV,
)
from simclrv2.kfp_client.errors import PipelineClientError
from simclrv2.kfp_client.parameters import parse_param
from simclrv2.kfp_client.runs import run
from simclrv2.kfp_client.schedule import schedule, set_schedule_enabled, validate_cron
from simclrv2.kfp_client.upload import upload

if TYPE_CHECKING:
    import kfp


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
