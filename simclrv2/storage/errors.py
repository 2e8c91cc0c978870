"""Storage errors that say what went wrong and how to fix it.

botocore reports an unknown bucket, refused credentials or an unreachable endpoint as terse
codes ("403", "NoSuchBucket", "Could not connect"). :func:`explain_client_error` turns them
into a :class:`StorageError` naming the URI, the endpoint and the fix. The messages never
contain credentials: they are built from the error code, the URI and the endpoint only.
:func:`explain_local_write_error` does the same for a local disk that is full.
"""

from __future__ import annotations

import errno
import os
import shutil
from urllib.parse import urlsplit, urlunsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from simclrv2.errors import UsageError
from simclrv2.storage.uri import is_s3_uri, split_s3_uri

__all__ = [
    "LocalDiskFullError",
    "ObjectNotFound",
    "StorageError",
    "StorageSettingsError",
    "describe_endpoint",
    "explain_client_error",
    "explain_local_write_error",
]

_CREDENTIAL_CODES = frozenset(
    {
        "403",
        "AccessDenied",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
    }
)
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})

_CREDENTIALS_HINT = (
    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the "
    "--s3-access-key-id/--s3-secret-access-key flags"
)


class StorageError(Exception):
    """Reading or writing the object store failed; the message says why and how to fix it."""


class StorageSettingsError(StorageError, UsageError):
    """The store refuses the request as given (unknown bucket, refused or missing
    credentials): the user must fix a URI or a credential, and retrying cannot help."""


class ObjectNotFound(StorageError, FileNotFoundError):  # noqa: N818 (reads as "object not found")
    """There is no object (or local file) at the URI."""


def describe_endpoint(endpoint: str | None) -> str:
    """The endpoint as shown in messages: without any user:password part; AWS when unset."""
    if not endpoint:
        return "the default AWS S3 endpoint"
    parts = urlsplit(endpoint)
    if parts.username is None and parts.password is None:
        return endpoint
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _bucket_of(uri: str) -> str:
    if not is_s3_uri(uri):
        return uri
    try:
        return split_s3_uri(uri)[0]
    except ValueError:
        return uri


def explain_client_error(
    error: ClientError | BotoCoreError, uri: str, endpoint: str | None
) -> StorageError:
    """Turn a botocore error met while accessing ``uri`` into a :class:`StorageError`.

    Returns (does not raise) the error, so callers write ``raise explain_client_error(...) from
    error``. A missing object becomes :class:`ObjectNotFound`, which is a ``FileNotFoundError``.
    """
    where = describe_endpoint(endpoint)
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        operation = error.operation_name
        # HEAD requests have no body, so a missing bucket shows up as a bare "404" there.
        if code == "NoSuchBucket" or (operation == "HeadBucket" and code in _NOT_FOUND_CODES):
            bucket = details.get("BucketName") or _bucket_of(uri)
            return StorageSettingsError(
                f"bucket {bucket!r} does not exist at {where}: create it (e.g. `aws s3 mb "
                f"s3://{bucket}` or in your storage console) or fix the URI {uri!r}"
            )
        if code in _CREDENTIAL_CODES or status == 403:
            return StorageSettingsError(
                f"S3 at {where} refused the credentials for {uri!r} ({code or status}): "
                f"{_CREDENTIALS_HINT}"
            )
        if code == "PreconditionFailed":  # a resumed read asked for the version it began
            return StorageError(
                f"{uri!r} was replaced at {where} while it was being read: read it again "
                "(a published dataset's shards should never change)"
            )
        # Before the 404 test: S3 answers a vanished upload with 404 too.
        if code == "NoSuchUpload":
            return StorageError(
                f"the multipart upload to {uri!r} no longer exists at {where} "
                "(aborted, or expired by a bucket lifecycle rule); write the object again"
            )
        if code in _NOT_FOUND_CODES or status == 404:
            return ObjectNotFound(f"no object at {uri!r} (S3 endpoint {where})")
        message = details.get("Message") or "no message"
        return StorageError(
            f"S3 {operation} on {uri!r} at {where} failed: {code or status}: {message}"
        )
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return StorageSettingsError(
            f"no complete S3 credentials for {uri!r}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (in Kubeflow, from the artifact-store secret) or pass "
            "--s3-access-key-id and --s3-secret-access-key"
        )
    if isinstance(error, ReadTimeoutError | ConnectTimeoutError):
        return StorageError(
            f"S3 endpoint {where} did not answer in time for {uri!r}: is AWS_ENDPOINT_URL an "
            "S3 server, and is it up and not overloaded? (storage.connect_timeout_s / "
            "storage.read_timeout_s set the waits)"
        )
    if isinstance(error, BotoConnectionError):
        return StorageError(
            f"cannot reach S3 endpoint {where} for {uri!r}: is AWS_ENDPOINT_URL right and "
            f"the server up? ({type(error).__name__})"
        )
    return StorageError(f"S3 access to {uri!r} at {where} failed: {type(error).__name__}: {error}")


class LocalDiskFullError(StorageError):
    """The local file system ran out of space (or quota) while a file was written."""


def explain_local_write_error(path: str, error: OSError) -> StorageError | OSError:
    """A clear LocalDiskFullError for ENOSPC / EDQUOT; any other OSError unchanged."""
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return error
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = f"{shutil.disk_usage(folder).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    reason = "no space left" if error.errno == errno.ENOSPC else "disk quota exceeded"
    return LocalDiskFullError(
        f"{reason} on the file system of {folder} while writing {path} ({free}); nothing "
        "was written there: free some space, or write the output to another disk or to S3 "
        "(an s3:// --output)"
    )
