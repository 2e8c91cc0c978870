"""Start and stop a real Prometheus Pushgateway (Debian's ``prometheus-pushgateway``) for tests.

The Debian package also installs a systemd service on port 9091; it plays no part here. The
tests start their own process on a free loopback port with persistence off (metrics only in
memory, nothing written to /var/lib), wait until ``/-/ready`` answers, and stop it by its pid.
A stopped gateway can be started again on the same port (:meth:`Pushgateway.start`), as a
gateway that was down comes back.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

#: Where ``apt-get install prometheus-pushgateway`` puts the binary.
DEBIAN_BINARY = "/usr/bin/prometheus-pushgateway"
INSTALL_HINT = "apt-get install -y prometheus-pushgateway"


def find_pushgateway_binary() -> str | None:
    """The Debian binary if installed, else ``prometheus-pushgateway`` / ``pushgateway`` on PATH."""
    if Path(DEBIAN_BINARY).is_file():
        return DEBIAN_BINARY
    return shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")


def free_loopback_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Pushgateway:
    """A running Pushgateway reachable at ``url`` (``http://127.0.0.1:PORT``)."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    command: list[str] = field(default_factory=list, repr=False)
    started_in_s: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start a stopped gateway again on the same port (its pushed metrics are gone)."""
        if not self._stopped:
            return
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.log_path.parent,
            )
        self._stopped = False
        try:
            _wait_until_ready(self, timeout_s)
        except RuntimeError:
            self.stop()
            raise

    def get(self, path: str, timeout_s: float = 5.0) -> str:
        """GET ``path`` (e.g. ``/metrics``) and return the body as text."""
        with urllib.request.urlopen(self.url + path, timeout=timeout_s) as response:
            return response.read().decode("utf-8")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the gateway's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no pushgateway log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the process by its pid: SIGTERM, then SIGKILL after ``grace_s`` seconds."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _launch(binary: str, work_dir: Path) -> Pushgateway:
    port = free_loopback_port()
    command = [
        binary,
        f"--web.listen-address=127.0.0.1:{port}",
        # Empty file name: keep metrics in memory only (the default writes to /var/lib).
        "--persistence.file=",
        "--log.level=info",
    ]
    log_path = work_dir / "pushgateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work_dir
        )
    return Pushgateway(
        url=f"http://127.0.0.1:{port}", process=process, log_path=log_path, command=command
    )


def _wait_until_ready(gateway: Pushgateway, timeout_s: float) -> None:
    """Poll ``/-/ready`` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise RuntimeError(
                f"pushgateway exited with code {gateway.process.returncode} while starting:\n"
                f"{gateway.log_tail()}"
            )
        try:
            gateway.get("/-/ready", timeout_s=1.0)
            return
        except (urllib.error.URLError, OSError) as error:
            last_error = error
            time.sleep(0.05)
    raise RuntimeError(
        f"pushgateway at {gateway.url} not ready after {timeout_s:.0f} s "
        f"(last error: {last_error}):\n{gateway.log_tail()}"
    )


def start_pushgateway(work_dir: Path, timeout_s: float = 30.0, attempts: int = 3) -> Pushgateway:
    """Start a Pushgateway on a free loopback port, logging to ``work_dir``; wait until ready.

    A port taken between picking and binding makes the gateway exit; that is retried with a
    new port up to ``attempts`` times. Raises FileNotFoundError without the binary and
    RuntimeError (with the gateway's log) if it never becomes ready.
    """
    binary = find_pushgateway_binary()
    if binary is None:
        raise FileNotFoundError(f"no pushgateway binary: {INSTALL_HINT}")
    for attempt in range(1, attempts + 1):
        attempt_dir = work_dir / f"attempt-{attempt}"
        attempt_dir.mkdir(parents=True)
        started = time.monotonic()
        gateway = _launch(binary, attempt_dir)
        try:
            _wait_until_ready(gateway, timeout_s)
        except RuntimeError:
            exited_by_itself = gateway.process.poll() is not None
            gateway.stop()
            if attempt == attempts or not exited_by_itself:
                raise
            continue
        gateway.started_in_s = time.monotonic() - started
        return gateway
    raise AssertionError("unreachable")
