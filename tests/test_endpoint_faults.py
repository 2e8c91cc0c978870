"""S3 endpoints that refuse, hang or reject us, and a full local disk: each ends in bounded
time with one message that says what to fix and never shows a secret (issue 15).

Everything is real: the SeaweedFS server of the session (wrong keys, a missing bucket), a
loopback port nothing listens on (refused), a socket that accepts and never answers (hung),
and a small tmpfs mounted for the test (full disk; needs root, as on CI). The CLI runs in
process (``simclrv2.cli.main``), as tests/test_bad_inputs.py does; these rows live here
because they need servers and mounts that catalogue cannot describe.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.local_seaweedfs import SeaweedFS
from simclrv2.cli import main
from simclrv2.config.loading import ConfigError, load_config_text
from simclrv2.config.run_config import RunConfig
from simclrv2.storage.errors import LocalDiskFullError, StorageError
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.retry_budget import S3RetryBudget
from simclrv2.storage.s3_client import S3Settings
from tests.pushgateway import free_loopback_port
from tests.silent_server import SilentServer
from tests.test_bad_inputs import image_folder

SECRET = "wJalrXUtnFEMI-K7MDENG-d0-not-print-me"


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    """Exit status, stderr and seconds of one in-process CLI run."""
    capsys.readouterr()
    started = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - started
    return code, capsys.readouterr().err, elapsed


def _use_s3(monkeypatch: pytest.MonkeyPatch, endpoint: str, key: str, secret: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


# Refused by the server: exit 2 at once, never retried ------------------------------------


@pytest.mark.s3
def test_wrong_secret_fails_at_once_with_exit_2(
    s3_server: SeaweedFS, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _use_s3(monkeypatch, s3_server.endpoint_url, s3_server.access_key_id, SECRET)
    code, err, elapsed = _cli(["verify", f"s3://{s3_bucket}/data"], capsys)
    assert code == 2, err
    assert f"S3 at {s3_server.endpoint_url} refused the credentials" in err
    assert "AWS_SECRET_ACCESS_KEY" in err and SECRET not in err
    assert elapsed < 3, elapsed  # a refusal is final: no retry budget spent on it


@pytest.mark.s3
def test_missing_bucket_fails_at_once_with_exit_2(
    s3_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path
) -> None:
    server = s3_server
    _use_s3(monkeypatch, server.endpoint_url, server.access_key_id, server.secret_access_key)
    bucket = f"missing-{uuid.uuid4().hex[:8]}"
    source = image_folder(tmp_path / "src")
    code, err, elapsed = _cli(
        ["shard", "--source", str(source), "--output", f"s3://{bucket}/data"], capsys
    )
    assert code == 2, err
    assert f"bucket '{bucket}' does not exist at {server.endpoint_url}: create it" in err
    assert server.secret_access_key not in err
    assert elapsed < 3, elapsed


# Unreachable: exit 1 within the first-contact budget --------------------------------------


def test_refused_endpoint_fails_within_the_first_contact_budget(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    endpoint = f"http://127.0.0.1:{free_loopback_port()}"  # nothing listens there
    _use_s3(monkeypatch, endpoint, "AKEXAMPLE", SECRET)
    code, err, elapsed = _cli(["verify", "s3://bucket/data"], capsys)
    assert code == 1, err
    first = err.splitlines()[0]
    assert f"cannot reach S3 endpoint {endpoint}" in first
    assert "is AWS_ENDPOINT_URL right and the server up?" in first
    assert "storage.first_contact_budget_s" in first and SECRET not in err
    budget = S3RetryBudget()
    # It did retry (more than one attempt), and stopped within the budget.
    assert 1.0 < elapsed < budget.first_contact_budget_s + 1.0, elapsed


def test_hanging_endpoint_fails_after_its_read_timeout() -> None:
    budget = S3RetryBudget(connect_timeout_s=1.0, read_timeout_s=1.0, first_contact_budget_s=0)
    with SilentServer() as silent:
        store = ObjectStore(S3Settings(silent.url, "AKEXAMPLE", SECRET, retry_budget=budget))
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            store.check_bucket("s3://bucket/data")
        elapsed = time.monotonic() - started
    message = str(caught.value)
    assert f"S3 endpoint {silent.url} did not answer in time" in message
    assert SECRET not in message
    assert silent.connections >= 1  # it connected: the server hung, it did not refuse
    assert 1.0 <= elapsed <= budget.longest_operation_s(endpoint_answered=False) + 0.5


# The retry budget in the run config --------------------------------------------------------


def test_the_storage_section_is_validated_and_reaches_the_client() -> None:
    config = load_config_text(RunConfig, "storage: {outage_budget_s: 60, read_timeout_s: 12}")
    assert config.storage.outage_budget_s == 60.0 and config.storage.read_timeout_s == 12.0
    assert RunConfig().storage == S3RetryBudget()  # absent section: the defaults
    for bad, says in (
        ("storage: {read_timeout_s: 0}", "storage.read_timeout_s must be > 0"),
        ("storage: {outage_budget_s: -1}", "storage.outage_budget_s must be >= 0"),
        ("storage: {first_backoff_s: 9}", "storage.max_backoff_s (5.0) must be at least"),
        ("storage: {outage_budget: 60}", "did you mean storage.outage_budget_s?"),
    ):
        with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
            load_config_text(RunConfig, bad)

    store = ObjectStore(S3Settings("http://127.0.0.1:9", "AKEXAMPLE", SECRET))
    store.use_retry_budget(config.storage)
    assert store.client.meta.config.read_timeout == 12.0
    assert store.client.meta.config.retries["total_max_attempts"] == 1  # the store retries
    # DataLoader workers get the settings, budget included.
    assert pickle.loads(pickle.dumps(store)).retry_budget == config.storage


# A full local disk ------------------------------------------------------------------------


@contextlib.contextmanager
def _small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the block (a real, small file system)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path, leave_bytes: int) -> None:
    """Fill ``disk`` until about ``leave_bytes`` are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave_bytes))


def test_a_full_disk_leaves_no_file_and_says_so(tmp_path: Path) -> None:
    with _small_disk(tmp_path / "disk", "256k") as disk:
        store = ObjectStore()
        target = disk / "checkpoints" / "step-1.pt"
        with pytest.raises(LocalDiskFullError) as caught:
            store.write_bytes(str(target), os.urandom(512 * 1024))
        message = str(caught.value)
        assert message.startswith(f"no space left on the file system of {target.parent}")
        assert "free some space, or write the output to another disk or to S3" in message
        assert sorted(p.name for p in (disk / "checkpoints").iterdir()) == []  # no temp file
        store.write_bytes(str(disk / "small.json"), b"{}")  # space is back for what fits
        assert (disk / "small.json").read_bytes() == b"{}"


def test_the_shard_step_on_a_full_disk_exits_1_and_publishes_nothing(
    tmp_path: Path, capsys
) -> None:
    source = image_folder(tmp_path / "src", train=16, val=2)
    with _small_disk(tmp_path / "disk", "1m") as disk:
        _fill(disk, leave_bytes=16 * 1024)
        output = disk / "out"
        code, err, elapsed = _cli(
            ["shard", "--source", str(source), "--output", str(output), "--labels-per-class", "1"],
            capsys,
        )
        left = sorted(p.name for p in output.rglob("*")) if output.exists() else []
    assert code == 1, err
    assert err.splitlines()[0].startswith("simclrv2: error: no space left on the file system of")
    assert "Traceback" not in err
    assert "manifest.json" not in left and not [n for n in left if ".tmp-" in n], left
    assert elapsed < 30
