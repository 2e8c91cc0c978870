"""Run one S3 operation, waiting out a storage outage within an :class:`S3RetryBudget`.

Transient failures (the connection refused, reset or timed out; a 5xx answer; throttling)
are retried with exponential backoff and jitter; anything else fails at once. When the
budget is spent, or the failure is not transient, the botocore error becomes a
:class:`~simclrv2.storage.errors.StorageError` that names the endpoint and the URI (never a
credential).

Which endpoints have answered is remembered per process (module state: a DataLoader worker,
forked from its parent, inherits it). Until an endpoint has answered once, the short
``first_contact_budget_s`` applies, so a mistyped endpoint fails in seconds.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from simclrv2.storage.errors import StorageError, describe_endpoint, explain_client_error
from simclrv2.storage.retry_budget import S3RetryBudget

__all__ = ["call_with_retry", "endpoint_has_answered", "is_transient"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

# 5xx answers and throttling: the server is there but cannot serve right now.
_TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})
_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})

_answered_endpoints: set[str] = set()
_answered_lock = threading.Lock()


def _endpoint_key(endpoint: str | None) -> str:
    return endpoint or "aws"


def endpoint_has_answered(endpoint: str | None) -> bool:
    """Whether any S3 request to ``endpoint`` got an HTTP answer in this process."""
    return _endpoint_key(endpoint) in _answered_endpoints


def _remember_answer(endpoint: str | None) -> None:
    key = _endpoint_key(endpoint)
    if key not in _answered_endpoints:
        with _answered_lock:
            _answered_endpoints.add(key)


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same request later may succeed (an outage, not a mistake)."""
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.response.get("Error", {}).get("Code", ""))
        return status in _TRANSIENT_STATUS or code in _TRANSIENT_CODES
    # Refused, reset or timed-out connections, and answers cut off mid-body.
    return isinstance(error, BotoConnectionError | HTTPClientError | IncompleteReadError)


def call_with_retry(
    operation: Callable[[], T],
    *,
    name: str,
    uri: str,
    endpoint: str | None,
    budget: S3RetryBudget,
) -> T:
    """``operation()``, retried on transient failures within ``budget``.

    ``name`` (e.g. ``"upload_part"``) and ``uri`` only label log lines and the error. Raises
    StorageError (via :func:`explain_client_error`) when the failure is not transient or
    the budget is spent; a spent budget adds how long and how often it was tried.
    """
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            result = operation()
        except (ClientError, BotoCoreError) as error:
            if isinstance(error, ClientError):
                _remember_answer(endpoint)  # an HTTP answer, even an error, proves it is there
            if not is_transient(error):
                raise explain_client_error(error, uri, endpoint) from error
            answered = endpoint_has_answered(endpoint)
            window = budget.outage_budget_s if answered else budget.first_contact_budget_s
            elapsed = time.monotonic() - started
            pause = budget.backoff_s(attempt) * random.uniform(0.5, 1.0)
            if elapsed + pause > window:
                raise _gave_up(error, uri, endpoint, attempt, elapsed, answered) from error
            if attempt == 1:
                _log.warning(
                    "S3 endpoint %s failed %s on %s (%s); retrying for up to %.0f s",
                    describe_endpoint(endpoint),
                    name,
                    uri,
                    type(error).__name__,
                    window,
                )
            time.sleep(pause)
            continue
        _remember_answer(endpoint)
        if attempt > 1:
            _log.warning(
                "S3 endpoint %s answered %s on %s again after %.1f s (%d attempts)",
                describe_endpoint(endpoint),
                name,
                uri,
                time.monotonic() - started,
                attempt,
            )
        return result


def _gave_up(
    error: ClientError | BotoCoreError,
    uri: str,
    endpoint: str | None,
    attempts: int,
    elapsed: float,
    answered: bool,
) -> StorageError:
    explained = explain_client_error(error, uri, endpoint)
    setting = "storage.outage_budget_s" if answered else "storage.first_contact_budget_s"
    note = (
        "; it answered earlier, so this is an outage longer than the retry budget"
        if answered
        else "; it has not answered this process yet"
    )
    return type(explained)(
        f"{explained} [gave up after {attempts} attempt{'s' if attempts != 1 else ''} in "
        f"{elapsed:.1f} s ({setting}){note}]"
    )
