"""The two kinds of failure a user can meet, and the one line the command line shows for each.

- UsageError: the command cannot succeed as given; the user must change an argument, a
  setting, a credential or an input file. The CLI exits 2. It is a ValueError, since the
  library has always signalled bad values that way (config checks, label subsets, manifests),
  and every ValueError reaching the CLI is treated as one.
- anything else: the command was right but something failed while it ran (a server that does
  not answer, storage that fails, a step that crashes). The CLI exits 1.

Messages say what is wrong and how to fix it, and never hold credentials. This module imports
nothing heavy (no kfp, torch or boto3), so every part of the library can raise from it.
"""

USAGE_EXIT = 2
RUNTIME_EXIT = 1
INTERRUPTED_EXIT = 130

# What torch puts in the message of an exception re-raised from a DataLoader worker.
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


class UsageError(ValueError):
    """Bad input the user must fix: an argument, a setting, a credential, a file or its data."""


def is_usage_error(error: BaseException) -> bool:
    """Whether the CLI should exit 2 (the user must change something) rather than 1."""
    if isinstance(error, UsageError | ValueError):
        return True
    # A path the user gave that is not there, or that they may not read: theirs to fix.
    return isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError)


def message_of(error: BaseException) -> str:
    """The error's message without any traceback text (a YAML error may span lines).

    An exception raised in a DataLoader worker comes back with the worker's traceback inside
    its message: its last line is the original message.
    """
    text = str(error).strip()
    if _WORKER_TRACEBACK in text:
        last = text.splitlines()[-1]
        prefix, sep, message = last.partition(": ")
        text = message if sep and "Error" in prefix.rsplit(".", 1)[-1] else last
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        # "[Errno 2] No such file or directory: 'x'" -> "x: No such file or directory"
        text = f"{error.filename}: {error.strerror}"
    return text
