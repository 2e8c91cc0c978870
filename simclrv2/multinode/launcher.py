"""The KFP task of a multi-node step: submit the step's TrainJob, follow it, return its model.

- The TrainJob's name comes from the step's output (run id and step), so a retried launcher
  re-attaches to the job its first attempt made; one that already failed is replaced, and the
  new one resumes from the step's checkpoints.
- Node 0's log is copied into this task's log (the KFP UI shows it); state changes are
  printed with the time waited.
- A Failed job (with Trainer's reason), a job gone missing or a timeout fails the task; a
  failed or timed-out job, and the job of a cancelled run (SIGTERM), is deleted.
- The outputs are read back from S3, exactly as for a one-node step.
"""

import os
import signal
import threading
import time

from simclrv2.config.loading import dump_config
from simclrv2.config.run_config import RunConfig
from simclrv2.multinode.job_state import (
    COMPLETE,
    FAILED,
    MISSING,
    TrainJobBackend,
    TrainJobError,
)  # fmt: skip
from simclrv2.multinode.kubernetes_backend import KubernetesBackend
from simclrv2.multinode.node_spec import BACKEND_ENV, NodeSpec
from simclrv2.multinode.trainjob import build_trainjob, trainjob_name
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import join_uri

#: How long past activeDeadlineSeconds the launcher waits for Trainer to report the end.
DEADLINE_GRACE_SECONDS = 600


def backend_from_environment(spec: NodeSpec) -> TrainJobBackend:
    kind = os.environ.get(BACKEND_ENV, "kubernetes")
    if kind == "kubernetes":
        return KubernetesBackend.from_environment(spec.namespace)
    if kind == "local-processes":
        import tempfile

        from simclrv2.multinode.local_backend import LocalProcessBackend

        return LocalProcessBackend(tempfile.mkdtemp(prefix="simclrv2-trainjob-"))
    raise ValueError(f"{BACKEND_ENV}={kind!r}: expected kubernetes or local-processes")


def node_command(step: str, config_uri: str, output: str, **flags) -> list[str]:
    """What every node runs: torchrun with its rendezvous from Trainer's PET_* variables."""
    from simclrv2.pipeline_support.gpu_launch import torchrun_command

    return torchrun_command(step, config_uri, output, processes=None, python="python", **flags)


def run_multinode_step(
    step: str,
    config: RunConfig,
    output: str,
    spec: NodeSpec,
    backend: TrainJobBackend,
    store: ObjectStore | None = None,
    poll_seconds: float = 10.0,
    say=print,
    command: list[str] | None = None,
    **flags,
) -> str:
    """Run training step `step` as a TrainJob of spec.nodes nodes; returns the model URI.

    command: what the nodes run (default: node_command); flags: the step's CLI flags.
    """
    store = store if store is not None else ObjectStore()
    config_uri = join_uri(output, "launch", "run.yaml")
    store.write_bytes(config_uri, dump_config(config).encode())
    name = trainjob_name(output)
    command = command or node_command(step, config_uri, output, **flags)
    job = build_trainjob(name, spec, command, step, output)
    where = f"TrainJob {name} ({backend.where})"
    _submit(backend, job, where, poll_seconds, say)
    say(f"[{step}] {where}: {spec.nodes} nodes x {spec.processes_per_node} processes "
        f"(world size {spec.world_size}), image {spec.image}")  # fmt: skip

    stop = threading.Event()
    follower = threading.Thread(
        target=backend.follow_node0_log, args=(name, lambda line: say(f"[node 0] {line}"), stop),
        daemon=True,
    )  # fmt: skip
    follower.start()
    previous = signal.getsignal(signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:  # KFP cancels a run by stopping its pods (SIGTERM)
        signal.signal(signal.SIGTERM, _raise_cancelled)
    try:
        state = _wait(backend, name, spec, poll_seconds, step, say)
    except BaseException:  # cancelled, timed out, interrupted: leave no job behind
        stop.set()
        _delete(backend, name, say)
        follower.join(timeout=10)
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    stop.set()
    follower.join(timeout=60)  # the log's tail: the last lines are often the reason
    if state.phase == FAILED:
        _delete(backend, name, say)
        raise TrainJobError(f"{where} failed: {state.describe()}. Node 0's log is above; "
                            "the step's checkpoints are kept, so a retry resumes")  # fmt: skip
    model_uri = join_uri(output, "model.pt")
    if not store.exists(model_uri):
        raise TrainJobError(f"{where} completed but wrote no {model_uri}")
    say(f"[{step}] {where} complete -> {model_uri}")
    return model_uri


class Cancelled(BaseException):
    """The launcher was told to stop (SIGTERM: the run was cancelled or timed out)."""


def _raise_cancelled(signum, frame):
    raise Cancelled("SIGTERM: the run was cancelled")


def _submit(backend, job: dict, where: str, poll_seconds: float, say) -> None:
    name = job["metadata"]["name"]
    if backend.create(job):
        say(f"[launcher] created {where}")
        return
    state = backend.state(name)
    if state.phase != FAILED:
        say(f"[launcher] {where} exists ({state.describe()}): re-attaching")
        return
    say(f"[launcher] {where} failed before ({state.describe()}): replacing it; the new job "
        "resumes from the step's checkpoints")  # fmt: skip
    backend.delete(name)
    while backend.state(name).phase != MISSING:
        time.sleep(poll_seconds)
    if not backend.create(job):
        raise TrainJobError(f"{where} was re-created by someone else while being replaced")


def _wait(backend, name: str, spec: NodeSpec, poll_seconds: float, step: str, say):
    started = time.monotonic()
    limit = (spec.active_deadline_seconds + DEADLINE_GRACE_SECONDS
             if spec.active_deadline_seconds else None)  # fmt: skip
    last = None
    while True:
        state = backend.state(name)
        waited = time.monotonic() - started
        if state != last:
            say(f"[launcher] TrainJob {name}: {state.describe()} after {waited:.0f}s")
            last = state
        if state.phase in (COMPLETE, FAILED):
            return state
        if state.phase == MISSING:
            raise TrainJobError(
                f"TrainJob {name} disappeared while {step} waited for it "
                "(deleted by someone else?); retry the run to start it again"
            )
        if limit is not None and waited > limit:
            raise TrainJobError(
                f"TrainJob {name} still not finished after {waited:.0f}s, past its "
                f"activeDeadlineSeconds ({spec.active_deadline_seconds}); deleted it"
            )
        time.sleep(poll_seconds)


def _delete(backend, name: str, say) -> None:
    try:
        backend.delete(name)
        say(f"[launcher] deleted TrainJob {name}")
    except Exception as error:  # report, but keep the original failure
        say(f"[launcher] could not delete TrainJob {name}: {error}")
