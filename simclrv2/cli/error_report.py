"""How the CLI reports an error: one line that says what went wrong, and the exit status."""

import sys
import traceback

from simclrv2.errors import RUNTIME_EXIT, USAGE_EXIT, is_usage_error, message_of


def report(error: Exception, debug: bool) -> int:
    """One line on stderr that says what went wrong (the traceback too with --debug); the
    exit status: 2 when the user must change something, 1 when something failed."""
    if debug:
        traceback.print_exception(error)
    message = message_of(error)
    if is_usage_error(error) or _is_described(error):
        print(f"simclrv2: error: {message}", file=sys.stderr)
    else:  # not one of ours: the type says more than the message alone
        print(f"simclrv2: error: {type(error).__name__}: {message}", file=sys.stderr)
        if not debug:
            print("simclrv2: rerun with --debug to see where it failed", file=sys.stderr)
    return USAGE_EXIT if is_usage_error(error) else RUNTIME_EXIT


_DESCRIBED = (
    ("simclrv2.storage.errors", "StorageError"),
    ("simclrv2.training.checkpoint", "CheckpointError"),
    ("simclrv2.kfp_client.errors", "PipelineClientError"),
)


def _is_described(error: Exception) -> bool:
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    for module, name in _DESCRIBED:
        if module in sys.modules and isinstance(error, getattr(sys.modules[module], name)):
            return True
    return False
