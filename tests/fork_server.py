"""Start pipeline steps as real processes in milliseconds, to kill them with SIGKILL.

Importing torch and simclrv2 takes several seconds on the 2-core CI machine; the preemption
tests start dozens of step processes. So one server process imports everything once and
forks a child per job: each child is a real, separate process (its own memory, its own
DataLoader workers, its own S3 connections) that the test kills with a real SIGKILL. The
server never runs a torch operation itself, so no thread pool exists when it forks.

A job is `tests.preemption_jobs.run_job(**arguments)`, its output going to a log file. A job
can also be told to kill itself at an exact point (`die_at`): while a file whose name matches
a pattern is being written (half of its bytes passed to the store), or right after such a file
is published. That is the same SIGKILL, delivered at a moment a timer could hardly hit.

Protocol (JSON lines on the server's stdin / stdout): {"op": "start", "job": {...},
"log": path} -> {"pid": n}; {"op": "wait", "pid": n} -> {"returncode": r} (-9 for SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import traceback
from fnmatch import fnmatch
from pathlib import Path

PRELOAD = (
    "torch",
    "torchvision",
    "webdataset",
    "matplotlib.pyplot",
    "boto3",
    "simclrv2.steps.pretrain",
    "simclrv2.steps.finetune",
    "simclrv2.steps.distill",
    "simclrv2.steps.pseudolabel",
    "simclrv2.steps.evaluate",
    "simclrv2.shards.shard_dataset",
    "tests.preemption_jobs",
)


class ForkServer:
    """The test's side: start(job) -> pid, wait(pid) -> return code, kill(pid)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        root = Path(__file__).resolve().parent.parent
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.fork_server"],
            cwd=root,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._process.stdout.readline()  # after the imports: starts are instant now
        if not ready:
            raise RuntimeError(f"the fork server failed to start (exit {self._process.wait()})")

    def _ask(self, request: dict) -> dict:
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server died (exit {self._process.wait()})")
        return json.loads(line)

    def start(self, job: dict, log: Path) -> int:
        return self._ask({"op": "start", "job": job, "log": str(log)})["pid"]

    def wait(self, pid: int) -> int:
        return self._ask({"op": "wait", "pid": pid})["returncode"]

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=30)


def _die_when_writing(pattern: str, when: str) -> None:
    """Patch this (child) process's ObjectStore: SIGKILL itself at the first file whose name
    matches `pattern`, half-way through writing it ("mid-write") or right after it is
    published ("after-publish")."""
    from simclrv2.storage.object_store import ObjectStore
    from simclrv2.storage.uri import basename

    real_open_write = ObjectStore.open_write

    def open_write(self, uri):
        writer = real_open_write(self, uri)
        if not fnmatch(basename(uri), pattern):
            return writer
        if when == "mid-write":
            real_write = writer.write

            def write(data):
                view = memoryview(data).cast("B")
                real_write(view[: max(1, len(view) // 2)])
                os.kill(os.getpid(), signal.SIGKILL)

            writer.write = write
        else:
            real_close = writer.close

            def close():
                real_close()
                os.kill(os.getpid(), signal.SIGKILL)

            writer.close = close
        return writer

    ObjectStore.open_write = open_write


def _child(request: dict) -> None:
    """Run one job in the forked child; never returns."""
    code = 1
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        import torch

        # Tiny models: one thread is faster, and two spinning OpenMP threads per process slow
        # every process down on a shared 2-core machine.
        torch.set_num_threads(1)
        job = dict(request["job"])
        die_at = job.pop("die_at", None)
        if die_at is not None:
            _die_when_writing(die_at["pattern"], die_at["when"])
        from tests.preemption_jobs import run_job

        run_job(**job)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _warm_up_matplotlib() -> None:
    """Draw one figure: font loading and caches then happen once, not in every child."""
    import io

    import matplotlib.pyplot as plt

    figure = plt.figure()
    figure.gca().plot([0, 1], [0, 1], label="warm-up")
    figure.gca().legend()
    figure.savefig(io.BytesIO(), format="png")
    plt.close(figure)


def _serve() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    _warm_up_matplotlib()
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)
            reply = {"pid": pid}
        else:
            _, status = os.waitpid(request["pid"], 0)
            reply = {"returncode": os.waitstatus_to_exitcode(status)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
