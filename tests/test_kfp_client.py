"""simclrv2.kfp_client against a fake KFP API server that speaks the real v2beta1 REST protocol.

The requests kfp.Client sends are checked on the wire (tests/kfp_api_fake.py records them);
a real cluster is the remaining gap.
"""

import argparse
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kfp")

from simclrv2 import __version__, kfp_client
from simclrv2.cli.pipeline_client import add_pipeline_client_commands
from simclrv2.kfp_client import (
    PipelineClientError,
    RunFailedError,
    connect,
    default_version_name,
    parse_param,
    run,
    schedule,
    set_schedule_enabled,
    upload,
    validate_cron,
)
from tests.kfp_api_fake import FakeKfpServer

TOKEN = "s3cr3t-bearer-7f2a"  # a value that cannot appear in any output by accident
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_kfp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No KFP settings from this machine: kfp.Client reads ~/.config/kfp/context.json."""
    import kfp.client.client

    monkeypatch.setattr(
        kfp.client.client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json")
    )
    for name in (
        "KFP_HOST",
        "KF_PIPELINES_ENDPOINT",
        "KF_PIPELINES_TOKEN",
        "KF_PIPELINES_UI_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeKfpServer]:
    with FakeKfpServer() as server:
        yield server


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real compiled pipeline: one lightweight component, two int parameters."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def add(a: int, b: int) -> int:
        return a + b

    @dsl.pipeline(name="tiny-client-test")
    def tiny(a: int = 1, b: int = 2):
        add(a=a, b=b)

    path = tmp_path_factory.mktemp("package") / "tiny.yaml"
    compiler.Compiler().compile(tiny, str(path))
    return path


def _git_version_name() -> str:
    """What the second upload should be named, worked out here with git directly."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    changes = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return f"{__version__}-{sha}" + ("-dirty" if changes else "")


def _uploaded(fake: FakeKfpServer, package: Path, name: str = "simclrv2") -> tuple:
    client = connect(fake.url, None, token=TOKEN)
    return client, upload(client, str(package), name)


# ---------------------------------------------------------------------------------------------
# upload


def test_first_upload_creates_the_pipeline_with_the_yaml_as_multipart(fake, package):
    client = connect(fake.url, None, token=TOKEN)
    result = upload(client, str(package), "simclrv2", description="SimCLRv2 test")

    (request,) = fake.requests_to("POST", "/pipelines/upload")
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert set(request.form) == {"uploadfile"}
    assert request.form["uploadfile"]["filename"] == "tiny.yaml"
    assert request.form["uploadfile"]["content"] == package.read_bytes()
    assert request.param("name") == "simclrv2"
    assert request.param("description") == "SimCLRv2 test"
    assert fake.requests_to("POST", "/pipelines/upload_version") == []

    (pipeline,) = fake.pipelines.values()
    (version,) = fake.versions.values()
    assert result == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_name": "simclrv2",
        "version_id": version["pipeline_version_id"],
        "version_name": "simclrv2",  # the server names a new pipeline's first version
        "created": "pipeline",
    }
    assert version["pipeline_spec"]["pipelineInfo"]["name"] == "tiny-client-test"


def test_second_upload_adds_a_version_named_from_package_version_and_git_sha(fake, package):
    client, first = _uploaded(fake, package)
    second = upload(client, str(package), "simclrv2")

    expected = _git_version_name()
    (request,) = fake.requests_to("POST", "/pipelines/upload_version")
    assert request.param("pipelineid") == first["pipeline_id"]
    assert request.param("name") == expected
    assert request.form["uploadfile"]["content"] == package.read_bytes()
    assert second["created"] == "version"
    assert second["pipeline_id"] == first["pipeline_id"]
    assert second["version_name"] == expected
    assert second["version_id"] in fake.versions
    assert len(fake.pipelines) == 1

    named = upload(client, str(package), "simclrv2", version_name="v-explicit")
    assert named["version_name"] == "v-explicit"
    assert fake.requests_to("POST", "/pipelines/upload_version")[-1].param("name") == "v-explicit"


def test_uploading_an_existing_version_name_is_refused_before_sending(fake, package):
    client, _ = _uploaded(fake, package)
    upload(client, str(package), "simclrv2", version_name="v1")
    with pytest.raises(PipelineClientError, match="version 'v1' exists already"):
        upload(client, str(package), "simclrv2", version_name="v1")
    assert len(fake.requests_to("POST", "/pipelines/upload_version")) == 1


def test_missing_package_is_a_clear_error(fake, tmp_path):
    client = connect(fake.url, None)
    with pytest.raises(ValueError, match=r"no pipeline package at .*compile it first"):
        upload(client, str(tmp_path / "nope.yaml"), "simclrv2")


def _git(directory: Path, *arguments: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(directory)]
    return subprocess.run(
        [*command, *arguments], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_default_version_name_sha_dirty_and_without_git(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    _git(repo, "add", "code.py")
    _git(repo, "commit", "-q", "-m", "one")
    sha = _git(repo, "rev-parse", "--short", "HEAD")

    assert default_version_name(source_dir=repo) == f"{__version__}-{sha}"
    (repo / "untracked.txt").write_text("not part of the code\n")
    assert default_version_name(source_dir=repo) == f"{__version__}-{sha}"
    (repo / "code.py").write_text("x = 2\n")
    assert default_version_name(source_dir=repo) == f"{__version__}-{sha}-dirty"

    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    package = outside / "p.yaml"
    package.write_bytes(b"pipelineInfo: {name: p}\n")
    named = default_version_name(package, source_dir=outside)
    assert named.startswith(f"{__version__}-") and len(named) == len(__version__) + 9
    assert named == default_version_name(package, source_dir=outside)  # content-derived
    assert default_version_name(source_dir=outside) == __version__


# ---------------------------------------------------------------------------------------------
# run


def test_run_sends_version_reference_parameters_experiment_and_waits(fake, package):
    client, uploaded = _uploaded(fake, package)
    newest = upload(client, str(package), "simclrv2", version_name="v2")
    fake.run_states = ["PENDING", "RUNNING", "SUCCEEDED"]

    result = run(
        client, "simclrv2", "simclrv2-tests", "tiny run 1", {"a": 3, "b": 4},
        wait=True, timeout_s=30, poll_interval_s=0.01,
    )  # fmt: skip

    (created_experiment,) = fake.requests_to("POST", "/experiments")
    assert created_experiment.json["display_name"] == "simclrv2-tests"
    (experiment,) = fake.experiments.values()
    (request,) = fake.requests_to("POST", "/runs")
    assert request.json["display_name"] == "tiny run 1"
    assert request.json["experiment_id"] == experiment["experiment_id"]
    assert request.json["pipeline_version_reference"] == {
        "pipeline_id": uploaded["pipeline_id"],
        "pipeline_version_id": newest["version_id"],  # the newest version by default
    }
    assert request.json["runtime_config"]["parameters"] == {"a": 3, "b": 4}
    assert "pipeline_spec" not in request.json
    assert result["state"] == "SUCCEEDED"
    assert result["run_id"] in fake.runs
    assert result["experiment_id"] == experiment["experiment_id"]
    assert result["version_name"] == "v2"
    assert len(fake.requests_to("GET", f"/runs/{result['run_id']}")) == 3

    # The experiment is found, not created again; a named version is run when asked for.
    assert "service_account" not in request.json or not request.json["service_account"]
    again = run(
        client, "simclrv2", "simclrv2-tests", "tiny run 2", {}, version_name="simclrv2",
        service_account="simclrv2-pipeline-runner",
    )  # fmt: skip
    assert len(fake.requests_to("POST", "/experiments")) == 1
    assert again["version_id"] == uploaded["version_id"]
    assert again["state"] == "PENDING"  # not waited for
    # The overlay's least-privilege account (manifests/) for the run's pods.
    assert fake.requests_to("POST", "/runs")[-1].json["service_account"] == (
        "simclrv2-pipeline-runner"
    )


def test_run_from_a_package_file_sends_the_pipeline_spec(fake, package):
    client = connect(fake.url, None)
    result = run(client, str(package), "Default", "from file", {"a": 5})
    (request,) = fake.requests_to("POST", "/runs")
    assert request.json["pipeline_spec"]["pipelineInfo"]["name"] == "tiny-client-test"
    assert "pipeline_version_reference" not in request.json
    assert request.json["runtime_config"]["parameters"] == {"a": 5}
    assert result["package"] == str(package)
    assert fake.requests_to("POST", "/pipelines/upload") == []


def test_failed_run_raises_with_the_run_id_and_state(fake, package):
    client, _ = _uploaded(fake, package)
    fake.run_states = ["RUNNING", "FAILED"]
    fake.run_error = "task add failed: exit code 1"
    with pytest.raises(RunFailedError) as caught:
        run(client, "simclrv2", "Default", "doomed", {}, wait=True, poll_interval_s=0.01)
    (run_id,) = fake.runs
    assert caught.value.run_id == run_id
    assert caught.value.state == "FAILED"
    assert run_id in str(caught.value)
    assert "FAILED" in str(caught.value)
    assert "task add failed: exit code 1" in str(caught.value)


def test_wait_gives_up_after_the_timeout_naming_the_run(fake, package):
    client, _ = _uploaded(fake, package)
    fake.run_states = ["RUNNING"]
    with pytest.raises(PipelineClientError, match=r"run .* is still RUNNING after 0.05 s"):
        run(
            client,
            "simclrv2",
            "Default",
            "slow",
            {},
            wait=True,
            timeout_s=0.05,
            poll_interval_s=0.01,
        )


def test_run_of_an_unknown_pipeline_says_to_upload_first(fake):
    client = connect(fake.url, None)
    with pytest.raises(PipelineClientError, match=r"no pipeline named 'nothing'.*upload it first"):
        run(client, "nothing", "Default", "r", {})


# ---------------------------------------------------------------------------------------------
# schedule


def test_schedule_sends_cron_concurrency_catchup_and_mode(fake, package):
    client, uploaded = _uploaded(fake, package)
    result = schedule(
        client, "simclrv2", "nightly-runs", "nightly", "0 0 2 * * *", {"a": 7},
        max_concurrency=1, no_catchup=True,
    )  # fmt: skip

    (request,) = fake.requests_to("POST", "/recurringruns")
    body = request.json
    assert body["display_name"] == "nightly"
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 2 * * *"}}
    assert body["max_concurrency"] == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["runtime_config"]["parameters"] == {"a": 7}
    assert body["pipeline_version_reference"] == {
        "pipeline_id": uploaded["pipeline_id"],
        "pipeline_version_id": uploaded["version_id"],
    }
    (experiment,) = fake.experiments.values()
    assert experiment["display_name"] == "nightly-runs"
    assert body["experiment_id"] == experiment["experiment_id"]
    assert result["recurring_run_id"] in fake.recurring_runs
    assert result["mode"] == "ENABLE"
    assert result["replaced"] == []

    schedule(
        client, "simclrv2", "nightly-runs", "paused", "0 0 3 * * 1", {}, enabled=False,
        service_account="simclrv2-pipeline-runner",
    )  # fmt: skip
    paused = fake.requests_to("POST", "/recurringruns")[-1].json
    assert paused["mode"] == "DISABLE"
    assert paused["service_account"] == "simclrv2-pipeline-runner"


@pytest.mark.parametrize("cron", ["0 2 * * *", "  30 4 * * 1-5 "])
def test_five_field_cron_is_refused_saying_to_prepend_seconds(fake, package, cron):
    client, _ = _uploaded(fake, package)
    with pytest.raises(ValueError, match=r"5 fields.*6, seconds first: prepend the seconds") as err:
        schedule(client, "simclrv2", "Default", "nightly", cron, {})
    assert "'0 " + " ".join(cron.split()) + "'" in str(err.value)
    assert fake.requests_to("POST", "/recurringruns") == []


def test_cron_validation():
    assert validate_cron(" 0  0 2 * * * ") == "0 0 2 * * *"
    assert validate_cron("@daily") == "@daily"
    assert validate_cron("@every 6h") == "@every 6h"
    for bad in ["* * * *", "0 0 0 2 * * * *", "", "@sometimes"]:
        with pytest.raises(ValueError):
            validate_cron(bad)


def test_replace_deletes_the_old_recurring_run_first(fake, package):
    client, _ = _uploaded(fake, package)
    old = schedule(client, "simclrv2", "Default", "nightly", "0 0 2 * * *", {})
    with pytest.raises(PipelineClientError, match=r"'nightly' exists already.*--replace"):
        schedule(client, "simclrv2", "Default", "nightly", "0 0 4 * * *", {})
    new = schedule(client, "simclrv2", "Default", "nightly", "0 0 4 * * *", {}, replace=True)

    methods = [(r.method, r.path) for r in fake.requests]
    delete = ("DELETE", f"/apis/v2beta1/recurringruns/{old['recurring_run_id']}")
    assert delete in methods
    assert methods.index(delete) < len(methods) - 1 - methods[::-1].index(
        ("POST", "/apis/v2beta1/recurringruns")
    )
    assert list(fake.recurring_runs) == [new["recurring_run_id"]]
    assert new["replaced"] == [old["recurring_run_id"]]
    assert fake.recurring_runs[new["recurring_run_id"]]["trigger"]["cron_schedule"]["cron"] == (
        "0 0 4 * * *"
    )


def test_disable_and_enable_by_name_hit_their_endpoints(fake, package):
    client, _ = _uploaded(fake, package)
    job = schedule(client, "simclrv2", "Default", "nightly", "0 0 2 * * *", {})
    job_id = job["recurring_run_id"]

    assert set_schedule_enabled(client, "nightly", False)["recurring_run_id"] == job_id
    assert len(fake.requests_to("POST", f"/recurringruns/{job_id}:disable")) == 1
    assert fake.recurring_runs[job_id]["mode"] == "DISABLE"

    set_schedule_enabled(client, "nightly", True)
    assert len(fake.requests_to("POST", f"/recurringruns/{job_id}:enable")) == 1
    assert fake.recurring_runs[job_id]["mode"] == "ENABLE"

    with pytest.raises(PipelineClientError, match="no recurring run with that name"):
        set_schedule_enabled(client, "weekly", False)


# ---------------------------------------------------------------------------------------------
# connection and token


def test_token_reaches_the_authorization_header_and_no_output(fake, package, capsys, tmp_path):
    client, _ = _uploaded(fake, package)
    run(client, "simclrv2", "Default", "r", {}, wait=True, poll_interval_s=0.01)
    schedule(client, "simclrv2", "Default", "nightly", "0 0 2 * * *", {})
    assert fake.requests
    assert {r.headers.get("authorization") for r in fake.requests} == {f"Bearer {TOKEN}"}

    token_file = tmp_path / "token"
    token_file.write_text(f"  file-{TOKEN}\n")
    connect(fake.url, None, token_file=str(token_file))
    assert fake.requests[-1].headers["authorization"] == f"Bearer file-{TOKEN}"

    output = capsys.readouterr()
    assert TOKEN not in output.out + output.err


def test_token_from_the_environment_and_none_without(fake, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", f"env-{TOKEN}")
    connect(fake.url, None)
    assert fake.requests[-1].headers["authorization"] == f"Bearer env-{TOKEN}"
    monkeypatch.delenv("KF_PIPELINES_TOKEN")
    connect(fake.url, None)
    assert "authorization" not in fake.requests[-1].headers


def test_rejected_token_is_a_clear_error_without_the_token(package, capsys):
    with FakeKfpServer(required_token="the-right-one") as fake:
        # With a namespace kfp.Client skips its health check (which retries 5 times, 5 s apart).
        client = connect(fake.url, "team-a", token=TOKEN)
        with pytest.raises(PipelineClientError) as caught:
            upload(client, str(package), "simclrv2")
    message = str(caught.value)
    assert "HTTP 401" in message and "check the token" in message
    assert "Unauthenticated" in message  # the server's own message
    assert TOKEN not in message
    assert TOKEN not in str(caught.value.__cause__)
    output = capsys.readouterr()
    assert TOKEN not in output.out + output.err


def test_missing_host_and_unreachable_host_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="pass --host or set KFP_HOST"):
        connect(None, None)

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("KFP_HOST", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(PipelineClientError, match=f"127.0.0.1:{port}.*cannot reach"):
        connect(None, None, token=TOKEN)
    assert time.monotonic() - started < 20


def test_the_module_does_not_import_kfp_until_used():
    code = (
        "import argparse, sys\n"
        "import simclrv2.cli.pipeline_client as k\n"
        "k.add_pipeline_client_commands(argparse.ArgumentParser().add_subparsers())\n"
        "sys.exit(1 if 'kfp' in sys.modules else 0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---------------------------------------------------------------------------------------------
# command line


def test_parse_param_reads_yaml_scalars():
    assert parse_param("epochs=3") == ("epochs", 3)
    assert parse_param("label_fraction=0.01") == ("label_fraction", 0.01)
    assert parse_param("lr=1e-3") == ("lr", 0.001)
    assert parse_param("promote=true") == ("promote", True)
    assert parse_param("dataset=s3://d/fmnist") == ("dataset", "s3://d/fmnist")
    assert parse_param("note=a=b") == ("note", "a=b")
    assert parse_param("empty=") == ("empty", "")
    assert parse_param("items=[1, 2]") == ("items", "[1, 2]")
    for bad in ["novalue", "=3"]:
        with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
            parse_param(bad)


def _cli() -> argparse.ArgumentParser:
    """A throwaway `prog pipeline ...` parser with the client commands added."""
    parser = argparse.ArgumentParser(prog="prog")
    commands = parser.add_subparsers()
    pipeline = commands.add_parser("pipeline")
    add_pipeline_client_commands(pipeline.add_subparsers())
    return parser


def _call(argv: list[str], capsys) -> tuple[int, str, str]:
    args = _cli().parse_args(argv)
    code = args.handler(args)
    output = capsys.readouterr()
    return code, output.out, output.err


def test_cli_upload_run_schedule_disable(fake, package, capsys, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    connection = ["--host", fake.url, "--token-file", str(token_file)]

    code, out, _ = _call(["pipeline", "upload", "--package", str(package), *connection], capsys)
    (pipeline,) = fake.pipelines.values()
    assert code == 0
    assert out.count("\n") == 1  # one summary line; kfp's links went to stderr
    assert out.startswith(f"[pipeline upload] pipeline simclrv2 ({pipeline['pipeline_id']})")
    assert "new pipeline" in out

    code, out, _ = _call(["pipeline", "upload", "--package", str(package), *connection], capsys)
    assert code == 0 and _git_version_name() in out and "new version" in out

    argv = [
        "pipeline", "run", "--experiment", "cli", "--run-name", "cli run", "--wait",
        "--param", "a=3", "--param", "lr=1e-3", "--param", "name=tiny", *connection,
    ]  # fmt: skip
    code, out, _ = _call(argv, capsys)
    (request,) = fake.requests_to("POST", "/runs")
    assert code == 0
    assert request.json["runtime_config"]["parameters"] == {"a": 3, "lr": 0.001, "name": "tiny"}
    assert request.json["display_name"] == "cli run"
    assert out.count("\n") == 1 and out.rstrip().endswith(": SUCCEEDED")
    assert request.json["experiment_id"] in out

    argv = ["pipeline", "schedule", "--job-name", "nightly", "--cron", "0 0 2 * * *", *connection]
    code, out, _ = _call(argv, capsys)
    (job,) = fake.recurring_runs.values()
    assert code == 0 and job["recurring_run_id"] in out and "ENABLE" in out
    assert job["no_catchup"] is True and job["max_concurrency"] == "1"
    # Recurring runs retrain only on new data unless told otherwise.
    assert job["runtime_config"]["parameters"] == {"retrain": "on-new-data"}
    assert out.rstrip().endswith("retrain=on-new-data")

    replace = ["--replace", "--param", "a=9", "--param", "retrain=always"]
    code, out, _ = _call([*argv, *replace], capsys)
    (new_job,) = fake.recurring_runs.values()
    assert code == 0 and f"replaced {job['recurring_run_id']}" in out
    assert new_job["runtime_config"]["parameters"] == {"retrain": "always", "a": 9}

    argv = ["pipeline", "schedule", "--job-name", "nightly", "--disable", *connection]
    code, out, _ = _call(argv, capsys)
    assert code == 0 and out.rstrip().endswith("disabled")
    assert fake.requests_to("POST", f"/recurringruns/{new_job['recurring_run_id']}:disable")

    assert {r.headers.get("authorization") for r in fake.requests} == {f"Bearer {TOKEN}"}


def test_cli_errors(fake, package, capsys):
    connection = ["--host", fake.url]
    with pytest.raises(ValueError, match="prepend the seconds field"):
        _call(
            ["pipeline", "schedule", "--job-name", "j", "--cron", "0 2 * * *", *connection], capsys
        )
    assert fake.requests == []  # refused before connecting

    with pytest.raises(ValueError, match="--enable / --disable"):
        _call(["pipeline", "schedule", "--job-name", "j", *connection], capsys)

    # A request that cannot succeed as given: one line on stderr, exit status 2 (the user must
    # change it; 1 is for failures of the server or the connection).
    code, out, err = _call(["pipeline", "run", "--pipeline-name", "absent", *connection], capsys)
    assert code == 2 and out == ""
    assert err.startswith("simclrv2: error: ") and "no pipeline named 'absent'" in err

    with pytest.raises(SystemExit):
        _cli().parse_args(["pipeline", "run", "--param", "oops", *connection])
    assert "KEY=VALUE" in capsys.readouterr().err


def test_cli_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        _cli().parse_args(["pipeline", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("upload", "run", "schedule"))
    assert kfp_client.DEFAULT_PIPELINE_NAME == "simclrv2"
