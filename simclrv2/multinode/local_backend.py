"""A stand-in for Kubeflow Trainer on one machine: runs a TrainJob's command as N local
"nodes" (one torchrun each) with the PET_* rendezvous environment Trainer's torch plugin
sets, and restarts all of them when one fails, as a JobSet failure policy does.

It is what kfp.local and the tests drive through the same launcher code as a cluster; it is
not a scheduler (no GPUs, no node placement, no secrets: the nodes inherit this process's
environment, where the S3 keys already are).
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from simclrv2.multinode.job_state import COMPLETE, FAILED, MISSING, RUNNING, JobState


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class _LocalJob:
    name: str
    command: list
    env: dict
    nodes: int
    processes_per_node: int
    deadline: float | None
    folder: Path
    attempt: int = 0
    processes: list = field(default_factory=list)
    state: JobState = field(default_factory=lambda: JobState(RUNNING))


class LocalProcessBackend:
    """TrainJobs as local process groups, under `folder` (one log per node and attempt)."""

    def __init__(self, folder: str | Path, max_restarts: int = 3, poll_seconds: float = 0.2):
        self.folder = Path(folder)
        self.max_restarts = max_restarts
        self.poll_seconds = poll_seconds
        self.where = f"local processes under {self.folder} (stand-in for Kubeflow Trainer)"
        self._jobs: dict[str, _LocalJob] = {}
        self._lock = threading.Lock()

    def create(self, job: dict) -> bool:
        name = job["metadata"]["name"]
        with self._lock:
            if name in self._jobs:
                return False
            trainer = job["spec"]["trainer"]
            plain = {e["name"]: e["value"] for e in trainer.get("env", []) if "value" in e}
            deadline = job["spec"].get("activeDeadlineSeconds")
            local = _LocalJob(
                name, list(trainer["command"]), plain, int(trainer["numNodes"]),
                int(trainer["numProcPerNode"]),
                time.monotonic() + deadline if deadline else None,
                self.folder / name,
            )  # fmt: skip
            local.folder.mkdir(parents=True, exist_ok=True)
            self._jobs[name] = local
            self._start(local)
        threading.Thread(target=self._watch, args=(local,), daemon=True).start()
        return True

    def state(self, name: str) -> JobState:
        job = self._jobs.get(name)
        return job.state if job else JobState(MISSING, "NotFound", f"no local job {name}")

    def delete(self, name: str) -> None:
        with self._lock:
            job = self._jobs.pop(name, None)
        if job is not None:
            self._kill_all(job)

    def kill_node(self, name: str, node: int) -> None:
        """SIGKILL every process of one node (torchrun and its workers), as a lost machine."""
        os.killpg(self._jobs[name].processes[node].pid, signal.SIGKILL)

    def node_log(self, name: str, node: int, attempt: int | None = None) -> Path:
        job = self._jobs[name]
        return job.folder / f"attempt{job.attempt if attempt is None else attempt}-node{node}.log"

    def attempt(self, name: str) -> int:
        return self._jobs[name].attempt

    def follow_node0_log(self, name: str, emit: Callable[[str], None], stop: threading.Event):
        attempt, position = None, 0
        while True:
            job = self._jobs.get(name)
            if job is None:
                return
            if job.attempt != attempt:
                attempt, position = job.attempt, 0
            path = self.node_log(name, 0, attempt)
            if path.exists():
                with path.open() as log:
                    log.seek(position)
                    while line := log.readline():
                        if not line.endswith("\n"):
                            break  # finish the line on the next read
                        emit(line.rstrip("\n"))
                        position = log.tell()
            if stop.is_set():
                return
            stop.wait(self.poll_seconds)

    def _start(self, job: _LocalJob) -> None:
        port = _free_port()
        job.processes = []
        for node in range(job.nodes):
            env = {
                **os.environ, **job.env,
                "PET_NNODES": str(job.nodes),
                "PET_NPROC_PER_NODE": str(job.processes_per_node),
                "PET_NODE_RANK": str(node),
                "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": str(port),
            }  # fmt: skip
            for inherited in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
                env.pop(inherited, None)
            log = self.node_log(job.name, node).open("w")
            job.processes.append(subprocess.Popen(
                self._local(job.command), env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # one process group per node: kill_node takes all
            ))  # fmt: skip
            log.close()

    @staticmethod
    def _local(command: list) -> list:
        """The image's `python` is this interpreter here."""
        return [sys.executable, *command[1:]] if command[:1] == ["python"] else command

    def _watch(self, job: _LocalJob) -> None:
        while self._jobs.get(job.name) is job:
            codes = [p.poll() for p in job.processes]
            if all(code == 0 for code in codes):
                job.state = JobState(COMPLETE, "JobSetCompleted", "all nodes finished")
                return
            failed = [n for n, code in enumerate(codes) if code not in (None, 0)]
            if job.deadline is not None and time.monotonic() > job.deadline:
                self._kill_all(job)
                job.state = JobState(FAILED, "DeadlineExceeded",
                                     "the TrainJob ran past activeDeadlineSeconds")  # fmt: skip
                return
            if failed:
                self._kill_all(job)  # JobSet: one node failed, so every node restarts
                if job.attempt >= self.max_restarts:
                    job.state = JobState(
                        FAILED, "FailedJobs",
                        f"node {failed[0]} exited with {codes[failed[0]]}; "
                        f"{self.max_restarts} restart(s) used",
                    )  # fmt: skip
                    return
                with self._lock:
                    if self._jobs.get(job.name) is not job:
                        return
                    job.attempt += 1
                    self._start(job)
            time.sleep(self.poll_seconds)

    @staticmethod
    def _kill_all(job: _LocalJob) -> None:
        for process in job.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    os.killpg(process.pid, signal.SIGKILL)
        for process in job.processes:
            process.wait()
