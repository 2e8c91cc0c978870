"""One interface over local paths and ``s3://`` URIs: write, read, list, delete.

Every step of the pipeline reads and writes through :class:`ObjectStore`, so the same code
runs on a laptop (local folders) and in a cluster (S3, e.g. the SeaweedFS that Kubeflow
deploys). Writes are atomic and memory-bounded on both: a local file is written under a
temporary name and renamed into place; an S3 object is streamed with a multipart upload that
is completed only on success. Every S3 operation waits out a storage outage within the
settings' retry budget (simclrv2/storage/retry_budget.py), a streamed read included; every
botocore error is turned into a :class:`StorageError` that says what is wrong and how to fix
it. A local disk that fills up fails with :class:`LocalDiskFullError`, leaving nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import secrets
from collections.abc import Callable, Iterator
from typing import IO, Any

from botocore.exceptions import ClientError

from simclrv2.storage.errors import ObjectNotFound, explain_local_write_error
from simclrv2.storage.multipart_writer import DEFAULT_PART_SIZE, S3MultipartWriter
from simclrv2.storage.publish_on_close import PublishOnCloseWriter
from simclrv2.storage.resumable_reader import ResumableObjectReader
from simclrv2.storage.retry_budget import S3RetryBudget
from simclrv2.storage.retrying_call import call_with_retry
from simclrv2.storage.s3_client import DEFAULT_REGION, S3Settings, make_store_client
from simclrv2.storage.uri import S3_SCHEME, is_s3_uri, split_s3_uri

__all__ = ["AtomicFileWriter", "ObjectStore"]

# Read-ahead of a streamed S3 object; also makes every read(n) return n bytes until the end.
_READ_BUFFER_BYTES = 256 * 1024


class AtomicFileWriter(PublishOnCloseWriter):
    """Writable binary stream to a local file that appears only when closed successfully.

    Bytes go to ``<name>.tmp-<random>`` in the target's folder (created if missing); ``close``
    syncs it and renames it over the target (atomic on POSIX), ``abort`` or an exception in a
    ``with`` block removes it.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        # Same folder as the target, so the final rename never crosses file systems.
        self.temp_path = f"{path}.tmp-{secrets.token_hex(6)}"
        self._file = open(self.temp_path, "xb")  # noqa: SIM115 (closed in close/abort)
        self._opened = True

    def _write(self, view: memoryview) -> None:
        try:
            self._file.write(view)
        except OSError as error:
            # The stream is unusable once the disk is full: drop the partial file now.
            self._failure = explain_local_write_error(self.path, error)
            self._abort_quietly()
            raise self._failure from error

    def close(self) -> None:
        """Flush, sync and rename the temporary file over the target; no-op once closed."""
        if self.closed:
            return
        try:
            self._file.flush()
            # Sync before the rename so a crash never leaves a renamed but empty file.
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.temp_path, self.path)
        except OSError as error:
            self.abort()
            raise explain_local_write_error(self.path, error) from error
        except BaseException:
            self.abort()
            raise
        super().close()

    def abort(self) -> None:
        """Drop the temporary file: the target is left as it was."""
        if self.closed:
            return
        try:
            # Closing flushes the buffer, which fails again on a full disk: the file goes anyway.
            with contextlib.suppress(OSError):
                self._file.close()
            if os.path.exists(self.temp_path):
                os.remove(self.temp_path)
        finally:
            super().close()


class ObjectStore:
    """Read, write, list and delete files and S3 objects by URI.

    ``s3://bucket/key`` URIs go to S3 with ``settings`` (default: the AWS variables, see
    :meth:`S3Settings.from_env`); anything else is a local path. The boto3 client is created
    once, on the first S3 access, so purely local use never needs S3 settings. Operations
    wait out an outage within ``settings.retry_budget`` (:attr:`retry_budget`).
    """

    def __init__(
        self,
        settings: S3Settings | None = None,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        client_factory: Callable[[S3Settings | None], Any] = make_store_client,
    ) -> None:
        self.settings = settings
        self.part_size = part_size
        self._client_factory = client_factory
        self._client: Any = None

    def __repr__(self) -> str:
        return f"ObjectStore(settings={self.settings!r}, part_size={self.part_size})"

    def __getstate__(self) -> dict[str, Any]:
        # boto3 clients do not pickle; a copy in a DataLoader worker makes its own.
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    @property
    def retry_budget(self) -> S3RetryBudget:
        """How long an operation waits out an outage (the settings', else the default)."""
        return self.settings.retry_budget if self.settings is not None else S3RetryBudget()

    def use_retry_budget(self, budget: S3RetryBudget) -> None:
        """Wait out outages within ``budget`` from now on (a run config's ``storage``
        section). The settings change too, so DataLoader workers given them follow."""
        settings = self.settings if self.settings is not None else S3Settings.from_env()
        self.settings = dataclasses.replace(settings, retry_budget=budget)
        self._client = None  # its timeouts come from the budget

    @property
    def endpoint(self) -> str | None:
        """The S3 endpoint the client talks to (None: AWS), as messages name it."""
        return self.client.meta.endpoint_url

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created on first use."""
        if self._client is None:
            self._client = self._client_factory(self.settings)
        return self._client

    # Writing ---------------------------------------------------------------------------

    def open_write(self, uri: str) -> AtomicFileWriter | S3MultipartWriter:
        """A writable binary stream to ``uri`` that publishes the file/object on close.

        Use it as a context manager: leaving the block normally publishes, leaving it by an
        exception leaves nothing behind. Both kinds have ``bytes_written`` and ``sha256_hex()``.
        """
        if is_s3_uri(uri):
            return S3MultipartWriter(
                self.client, uri, part_size=self.part_size, retry_budget=self.retry_budget
            )
        return AtomicFileWriter(uri)

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write ``data`` to ``uri`` atomically (replacing what was there)."""
        with self.open_write(uri) as stream:
            stream.write(data)

    # Reading ---------------------------------------------------------------------------

    def open_read(self, uri: str) -> IO[bytes]:
        """A readable binary stream of ``uri`` (the caller closes it); ObjectNotFound if absent.

        An S3 stream goes on where it stopped when the connection breaks mid-read.
        """
        if is_s3_uri(uri):
            bucket, key = self._object_of(uri)

            def open_from(position: int, etag: str | None) -> dict[str, Any]:
                ranged = {"Range": f"bytes={position}-", "IfMatch": etag} if position else {}
                return self._call(uri, self.client.get_object, Bucket=bucket, Key=key, **ranged)

            reader = ResumableObjectReader(open_from, uri)
            return io.BufferedReader(reader, buffer_size=_READ_BUFFER_BYTES)
        try:
            return open(uri, "rb")
        except FileNotFoundError as error:
            raise ObjectNotFound(f"no file at {uri!r}") from error

    def read_bytes(self, uri: str) -> bytes:
        """The whole content of ``uri``."""
        with self.open_read(uri) as stream:
            return stream.read()

    def exists(self, uri: str) -> bool:
        """Whether a file/object exists at ``uri`` (a folder or bare prefix does not count)."""
        if not is_s3_uri(uri):
            return os.path.isfile(uri)
        try:
            self.size(uri)
        except ObjectNotFound:
            return False
        return True

    def size(self, uri: str) -> int:
        """Size of ``uri`` in bytes; ObjectNotFound if absent."""
        if is_s3_uri(uri):
            bucket, key = self._object_of(uri)
            response = self._call(uri, self.client.head_object, Bucket=bucket, Key=key)
            return int(response["ContentLength"])
        if not os.path.isfile(uri):
            raise ObjectNotFound(f"no file at {uri!r}")
        return os.path.getsize(uri)

    def list_files(self, prefix_uri: str) -> list[tuple[str, int]]:
        """Every file/object under the folder ``prefix_uri``, recursively: sorted (uri, size).

        ``prefix_uri`` is a folder: ``s3://b/data`` lists ``s3://b/data/...`` but not
        ``s3://b/data-old/...``. A missing folder lists as empty.
        """
        if is_s3_uri(prefix_uri):
            return sorted(self._list_s3(prefix_uri))
        found = []
        for folder, _, names in os.walk(prefix_uri):
            for name in names:
                path = os.path.join(folder, name)
                found.append((path, os.path.getsize(path)))
        return sorted(found)

    # Deleting and buckets --------------------------------------------------------------

    def delete(self, uri: str) -> None:
        """Delete the file/object at ``uri``; deleting something absent is not an error."""
        if is_s3_uri(uri):
            bucket, key = self._object_of(uri)
            self._call(uri, self.client.delete_object, Bucket=bucket, Key=key)
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(uri)

    def check_bucket(self, uri: str) -> None:
        """Fail early with a clear StorageError if the bucket of ``uri`` cannot be used.

        Catches an unknown bucket, refused credentials and an unreachable endpoint before any
        work starts. Does nothing for local paths.
        """
        if not is_s3_uri(uri):
            return
        bucket, _ = split_s3_uri(uri)
        self._call(f"{S3_SCHEME}{bucket}", self.client.head_bucket, Bucket=bucket)

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` if it does not exist yet (for tests and set-up tools)."""
        uri = f"{S3_SCHEME}{bucket}"
        split_s3_uri(uri)  # validates the name
        region = self.client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": bucket}
        # AWS wants the region spelled out everywhere except its default region.
        if region and region != DEFAULT_REGION:
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}

        def create() -> None:
            try:
                self.client.create_bucket(**kwargs)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise

        self._call(uri, create)

    # Internals -------------------------------------------------------------------------

    def _object_of(self, uri: str) -> tuple[str, str]:
        bucket, key = split_s3_uri(uri)
        if not key:
            raise ValueError(f"S3 URI {uri!r} names a bucket, not an object: add a key")
        return bucket, key

    def _list_s3(self, prefix_uri: str) -> Iterator[tuple[str, int]]:
        bucket, key = split_s3_uri(prefix_uri)
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""
        found: list[tuple[str, int]] = []
        token: dict[str, str] = {}
        while True:  # page by page, each page retried on its own
            page = self._call(
                prefix_uri, self.client.list_objects_v2, Bucket=bucket, Prefix=prefix, **token
            )
            for item in page.get("Contents", []):
                # Keys ending in "/" are folder markers some tools create, not files.
                if not item["Key"].endswith("/"):
                    found.append((f"{S3_SCHEME}{bucket}/{item['Key']}", int(item["Size"])))
            if not page.get("IsTruncated"):
                return iter(found)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def _call(self, uri: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        """Run one client method for ``uri`` within the retry budget; botocore errors
        become a StorageError that says what to fix."""
        return call_with_retry(
            lambda: method(**kwargs),
            name=getattr(method, "__name__", "request"),
            uri=uri,
            endpoint=self.endpoint,
            budget=self.retry_budget,
        )
