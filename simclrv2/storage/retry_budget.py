"""How long an S3 operation waits out a storage outage before it fails, and its timeouts.

An object store restarts (a SeaweedFS pod rescheduled, a MinIO upgrade) for 30-60 s now and
then. botocore's own retries give up within seconds, so every operation of the
:class:`~simclrv2.storage.object_store.ObjectStore` (a request, a part of a multipart upload,
the rest of a streamed read) is retried with exponential backoff for up to
``outage_budget_s`` as long as the failure is transient (refused or reset connections,
timeouts, 5xx answers, throttling). Errors the user must fix (refused credentials, a missing
bucket or object) are never retried.

An endpoint that has never answered this process is probably mistyped or unreachable rather
than restarting: its operations give up after ``first_contact_budget_s``, so a wrong
``AWS_ENDPOINT_URL`` is reported in seconds. Kubeflow's step retries cover a step that starts
during an outage.

One operation fails at most ``outage_budget_s + connect_timeout_s + read_timeout_s`` after
it started (the last attempt may begin just before the budget runs out).

Defaults (the run config's ``storage`` section; docs/storage-faults.md has the measurements):

=========================  ========  =================================================
setting                    default   what
=========================  ========  =================================================
``outage_budget_s``        120       retry window of one operation once the endpoint
                                     has answered this process (covers a 60 s restart
                                     with room for the server to warm up)
``first_contact_budget_s`` 5         retry window while it never has
``connect_timeout_s``      5         TCP connect, per attempt
``read_timeout_s``         30        wait for the next byte of an answer, per attempt
``first_backoff_s``        0.5       first pause between attempts; doubles each time
``max_backoff_s``          5         longest pause between attempts (a server that
                                     is back is noticed within 5 s)
=========================  ========  =================================================
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["S3RetryBudget"]


@dataclass(frozen=True)
class S3RetryBudget:
    """Retry window, backoff and timeouts of every S3 operation (see the module docstring)."""

    outage_budget_s: float = 120.0
    first_contact_budget_s: float = 5.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    first_backoff_s: float = 0.5
    max_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        # Messages name the run config key: this dataclass is the config's `storage` section.
        for name in ("connect_timeout_s", "read_timeout_s", "first_backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"storage.{name} must be > 0 seconds, got {value}")
        for name in ("outage_budget_s", "first_contact_budget_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(
                    f"storage.{name} must be >= 0 seconds (0: no retries), got {value}"
                )
        if self.max_backoff_s < self.first_backoff_s:
            raise ValueError(
                f"storage.max_backoff_s ({self.max_backoff_s}) must be at least "
                f"storage.first_backoff_s ({self.first_backoff_s})"
            )

    def backoff_s(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (1-based), before jitter."""
        return min(self.max_backoff_s, self.first_backoff_s * 2 ** (attempt - 1))

    def longest_operation_s(self, endpoint_answered: bool = True) -> float:
        """The most one operation can take before it fails (its last attempt included)."""
        window = self.outage_budget_s if endpoint_answered else self.first_contact_budget_s
        return window + self.connect_timeout_s + self.read_timeout_s
