"""A Docker engine for the image tests: the one that answers, else `dockerd` started here.

Starting dockerd needs root and Debian's docker.io (`apt-get install -y docker.io`); .ci/run
installs it. When no engine answers and none can be started, the caller skips and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "apt-get install -y docker.io, then run dockerd (as root)"


@dataclass
class DockerEngine:
    client: object  # docker.DockerClient
    process: subprocess.Popen[bytes] | None  # dockerd, when the tests started it

    def stop(self) -> None:
        """Stops dockerd if the tests started it (images stay in its data root)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _ping():
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except docker.errors.DockerException:
        return None


def find_or_start_docker_engine(log_path: Path, timeout_s: float = 60.0) -> DockerEngine | str:
    """A DockerEngine, or the reason why there is none."""
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the Python package `docker` is missing (make install has it)"
    client = _ping()
    if client is not None:
        return DockerEngine(client, None)
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return f"no Docker engine answers and there is no dockerd to start ({INSTALL_HINT})"
    if os.geteuid() != 0:
        return "no Docker engine answers and dockerd needs root to start"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [dockerd], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            return f"dockerd exited with code {process.returncode}:\n{tail}"
        client = _ping()
        if client is not None:
            return DockerEngine(client, process)
        time.sleep(0.5)
    process.kill()
    return f"dockerd did not answer within {timeout_s:.0f} s (log: {log_path})"
