"""A deliberate failure on a step's first attempt, to prove that retries resume.

`runtime.inject_failure_at_step: N` makes a training step exit with an error right after the
first checkpoint it writes at or after global step N (checkpoints come every
`runtime.checkpoint_every_steps` and at the end), but only on the first attempt: Kubeflow
Pipelines tells a step its attempt as KFP_RETRY_INDEX (Argo's {{retries}}, 0 first; set per
attempt by pipelines/local_retry_index.py under kfp.local; unset outside KFP counts as the
first attempt), and only when the attempt started before step N (a re-run outside KFP that
resumes past N does not fail again). The retry then resumes from that checkpoint, which is
the behaviour a preempted GPU node needs; manifests/README.md shows the one-command check on
a cluster.
"""

import os

RETRY_INDEX = "KFP_RETRY_INDEX"


class InjectedFailureError(RuntimeError):
    """Raised on purpose by runtime.inject_failure_at_step."""


def attempt_index() -> int:
    value = os.environ.get(RETRY_INDEX, "").strip()
    return int(value) if value.isdigit() else 0


def fail_on_first_attempt(step_name: str, step: int, started_at: int, inject_at: int) -> None:
    """Call right after a checkpoint of `step` is written, in an attempt that started at
    `started_at`: raises InjectedFailureError when inject_at (> 0) lies in
    (started_at, step] and this is attempt 0."""
    if inject_at <= 0 or not started_at < inject_at <= step or attempt_index() != 0:
        return
    raise InjectedFailureError(
        f"[{step_name}] injected failure after the checkpoint of step {step} "
        f"(runtime.inject_failure_at_step={inject_at}, {RETRY_INDEX}=0); a retry resumes "
        "from that checkpoint"
    )
