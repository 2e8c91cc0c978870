"""Where a TrainJob stands, read from its status conditions (Trainer v2: Complete, Failed,
Suspended; each with a reason and a message), and the interface every backend offers."""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

RUNNING, COMPLETE, FAILED, MISSING = "Running", "Complete", "Failed", "Missing"


class TrainJobError(RuntimeError):
    """A TrainJob was refused, failed or lost; the message says why and what to do."""


@dataclass(frozen=True)
class JobState:
    phase: str  # RUNNING, COMPLETE, FAILED or MISSING
    reason: str = ""
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in (COMPLETE, FAILED)

    def describe(self) -> str:
        detail = ": ".join(part for part in (self.reason, self.message) if part)
        return f"{self.phase} ({detail})" if detail else self.phase


def state_from_status(status: dict | None) -> JobState:
    """A TrainJob's .status -> JobState; a True Failed condition wins over Complete."""
    conditions = {c.get("type"): c for c in (status or {}).get("conditions") or []}
    for phase in (FAILED, COMPLETE):
        condition = conditions.get(phase)
        if condition and str(condition.get("status")) == "True":
            return JobState(phase, condition.get("reason", ""), condition.get("message", ""))
    return JobState(RUNNING)


class TrainJobBackend(Protocol):
    """What the launcher needs from where TrainJobs run: a Kubernetes cluster with Trainer
    (kubernetes_backend.py) or, for tests and laptops, local processes (local_backend.py)."""

    where: str

    def create(self, job: dict) -> bool:
        """Submit `job`; True if created, False if one of that name exists (re-attach)."""

    def state(self, name: str) -> JobState: ...

    def follow_node0_log(self, name: str, emit: Callable[[str], None], stop: threading.Event):
        """Send node 0's log lines to `emit`, reconnecting as needed; once `stop` is set
        (the job ended or the run was cancelled), send what is left and return."""

    def delete(self, name: str) -> None: ...
