"""A write-only file object that streams to one S3 object with a multipart upload.

Shards are written straight to S3 without holding them in memory: bytes collect in a buffer
of one part; each full part is sent with ``upload_part`` and the buffer starts again. ``close``
sends the last part and completes the upload, and only then does the object appear
(atomically, as S3 publishes a multipart object whole). ``abort`` (also what leaving a
``with`` block by an exception does) aborts the upload, so nothing appears and no parts are
left behind. An object smaller than one part is sent with a single ``put_object`` at close.

Every request waits out a storage outage within ``retry_budget``: a part is kept until S3
has taken it, so it can be sent again, and the upload (its id, its parts) lives on the
server across a restart.

It works as the stream of ``tarfile.open(fileobj=..., mode="w|")`` and webdataset's
``TarWriter``, which only call ``write`` (``tell`` is there for tarfile's seekable modes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from simclrv2.storage.errors import StorageError
from simclrv2.storage.publish_on_close import PublishOnCloseWriter
from simclrv2.storage.retry_budget import S3RetryBudget
from simclrv2.storage.retrying_call import call_with_retry
from simclrv2.storage.uri import split_s3_uri

__all__ = ["DEFAULT_PART_SIZE", "MAX_PARTS", "MIN_PART_SIZE", "S3MultipartWriter"]


MiB = 1024 * 1024
#: S3's smallest part, except for the last one.
MIN_PART_SIZE = 5 * MiB
#: S3's largest part number: with 8 MiB parts an object can hold up to about 78 GiB.
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * MiB


class S3MultipartWriter(PublishOnCloseWriter):
    """Writable, non-seekable binary stream to ``s3://bucket/key``, at most one part in memory.

    ``bytes_written`` and :meth:`sha256_hex` come from :class:`PublishOnCloseWriter`.
    ``peak_buffered_bytes`` is the
    largest the part buffer has been, never more than ``part_size``.
    """

    def __init__(
        self,
        client: Any,
        uri: str,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        retry_budget: S3RetryBudget | None = None,
    ) -> None:
        super().__init__(uri)
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        bucket, key = split_s3_uri(uri)
        if not key:
            raise ValueError(f"S3 URI {uri!r} names a bucket, not an object: add a key")
        self.uri = uri
        self.part_size = part_size
        self.retry_budget = retry_budget if retry_budget is not None else S3RetryBudget()
        self.peak_buffered_bytes = 0
        self._client = client
        self._bucket = bucket
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._published = False
        self._opened = True

    def _write(self, view: memoryview) -> None:
        """Buffer `view`, sending every part that fills up."""
        start = 0
        while start < len(view):
            # Fill the buffer only up to one part, so memory stays at part_size.
            take = min(len(view) - start, self.part_size - len(self._buffer))
            self._buffer += view[start : start + take]
            start += take
            self.peak_buffered_bytes = max(self.peak_buffered_bytes, len(self._buffer))
            if len(self._buffer) == self.part_size:
                try:
                    self._upload_buffer_as_part()
                except Exception as error:
                    # The stream is broken now: drop the parts already sent.
                    self._failure = error
                    self._abort_quietly()
                    raise

    def flush(self) -> None:
        """Nothing to do: S3 takes whole parts only, so bytes wait for a full part or close."""

    def close(self) -> None:
        """Send what is left and publish the object; a no-op when already closed or aborted."""
        if self.closed:
            return
        try:
            if self._upload_id is None:
                self._call(
                    self._client.put_object, Bucket=self._bucket, Key=self._key, Body=self._buffer
                )
            else:
                if self._buffer:
                    self._upload_buffer_as_part()
                self._complete_upload()
            self._published = True
        except BaseException:
            self._abort_quietly()
            raise
        finally:
            self._buffer = bytearray()
            super().close()

    # Publishing control ----------------------------------------------------------------

    def abort(self) -> None:
        """Drop everything: abort the multipart upload (if any) so no object and no parts stay."""
        if self.closed:
            return
        self._buffer = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        try:
            if upload_id is not None:
                self._call(
                    self._client.abort_multipart_upload,
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=upload_id,
                )
        finally:
            super().close()

    @property
    def published(self) -> bool:
        """Whether close() completed and the object now exists."""
        return self._published

    # Internals -------------------------------------------------------------------------

    def _upload_buffer_as_part(self) -> None:
        if self._upload_id is None:
            response = self._call(
                self._client.create_multipart_upload, Bucket=self._bucket, Key=self._key
            )
            self._upload_id = response["UploadId"]
        part_number = len(self._parts) + 1
        if part_number > MAX_PARTS:
            raise StorageError(
                f"{self.uri} needs more than {MAX_PARTS} parts of {self.part_size} bytes: "
                "use a larger part_size"
            )
        # Hand the full buffer over and start a new one instead of copying it.
        body, self._buffer = self._buffer, bytearray()
        response = self._call(
            self._client.upload_part,
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=part_number,
            Body=body,
        )
        self._parts.append({"PartNumber": part_number, "ETag": response["ETag"]})

    def _complete_upload(self) -> None:
        """Complete the upload. If a retry finds the upload gone because the server had
        completed it before the connection broke, the object of our size counts as ours."""
        try:
            self._call(
                self._client.complete_multipart_upload,
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except StorageError as error:
            cause = error.__cause__
            upload_gone = isinstance(cause, ClientError) and (
                cause.response.get("Error", {}).get("Code") == "NoSuchUpload"
            )
            if not (upload_gone and self._completed_meanwhile()):
                raise

    def _completed_meanwhile(self) -> bool:
        try:
            head = self._call(self._client.head_object, Bucket=self._bucket, Key=self._key)
        except StorageError:
            return False
        # A multipart ETag ends in "-<parts>"; with the size it identifies our completion.
        etag = str(head.get("ETag", "")).strip('"')
        return int(head.get("ContentLength", -1)) == self.bytes_written and etag.endswith(
            f"-{len(self._parts)}"
        )

    def _call(self, method: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """Run one client method within the retry budget; botocore errors become a
        StorageError that explains."""
        return call_with_retry(
            lambda: method(**kwargs),
            name=getattr(method, "__name__", "request"),
            uri=self.uri,
            endpoint=self._client.meta.endpoint_url,
            budget=self.retry_budget,
        )
