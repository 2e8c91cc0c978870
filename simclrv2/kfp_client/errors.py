"""Failed KFP API calls, as errors that say which call failed, the HTTP status and the
server's message (and never the token)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator

from simclrv2.errors import UsageError
from simclrv2.kfp_client.defaults import HOST_ENV, TOKEN_ENV


class PipelineClientError(RuntimeError):
    """A KFP API call failed: which call, the HTTP status and the server's message."""


class PipelineRequestError(PipelineClientError, UsageError):
    """The request cannot succeed as given (an unknown name, a refused token, a bad argument):
    the user must change it. The CLI exits 2 for these, 1 for the other API failures."""


# HTTP answers that say the request itself is wrong, not the server.
REQUEST_ERROR_STATUSES = frozenset({400, 401, 403, 404, 409})


class RunFailedError(PipelineClientError):
    """A run that was waited for ended in FAILED or CANCELED."""

    def __init__(self, run_id: str, state: str, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.state = state


@contextlib.contextmanager
def server_errors(action: str) -> Iterator[None]:
    """Turn kfp's API and connection errors into a PipelineClientError that says `action`."""
    import kfp_server_api
    import urllib3

    try:
        # kfp prints "... details: <link>" lines on stdout; they go to stderr so that stdout
        # carries only our one-line summaries (scripts parse them).
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except kfp_server_api.ApiException as error:
        kind = (
            PipelineRequestError if error.status in REQUEST_ERROR_STATUSES else PipelineClientError
        )
        raise kind(f"{action}: {describe_api_error(error)}") from error
    except urllib3.exceptions.HTTPError as error:
        reason = getattr(error, "reason", None) or error
        raise PipelineClientError(
            f"{action}: cannot reach the KFP API server ({reason}); check --host or "
            f"${HOST_ENV} and that the server (or its kubectl port-forward) is up"
        ) from error


def describe_api_error(error) -> str:
    """'HTTP 404 Not Found: <the server's message>' from an ApiException, without headers."""
    if not error.status:  # raised by the client itself (e.g. a TLS error): no HTTP answer
        return str(error.reason)
    detail = ""
    if error.body:
        body = error.body if isinstance(error.body, str) else error.body.decode("utf-8", "replace")
        try:
            parsed = json.loads(body)
            detail = parsed.get("message") or parsed.get("error") or ""
        except (ValueError, AttributeError):
            detail = body.strip()[:300]
    text = f"HTTP {error.status} {error.reason or ''}".rstrip()
    if error.status in (401, 403):
        text += f" (check the token: --token-file or ${TOKEN_ENV}, and --namespace)"
    return f"{text}: {detail}" if detail else text
