"""A readable stream of one S3 object that survives a storage outage mid-read.

Shards are streamed, not downloaded: a loader reads a tar object for minutes while training
consumes it. If the connection breaks (the server restarts), the stream asks again for the
rest of the object (``Range: bytes=<position>-``) within the store's retry budget and goes
on where it stopped. The ranged request carries the object's ETag (``If-Match``), so if the
object was replaced meanwhile the read fails instead of splicing two versions together.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError

from simclrv2.storage.errors import StorageError
from simclrv2.storage.retrying_call import is_transient

__all__ = ["MAX_RESUMES_WITHOUT_PROGRESS", "ResumableObjectReader"]

#: A connection that breaks again and again before a single byte arrives is not an outage
#: the retry budget can wait out (each ranged request succeeds): give up after this many.
MAX_RESUMES_WITHOUT_PROGRESS = 10


class ResumableObjectReader(io.RawIOBase):
    """Read-only, forward-only stream of an object.

    ``open_from(position, etag)`` returns the ``get_object`` answer for the object from
    ``position`` on (``etag`` None: any version); it must do its own retrying (the store
    passes a call that retries within its budget and raises StorageError when spent).
    """

    def __init__(
        self, open_from: Callable[[int, str | None], dict[str, Any]], uri: str = "the object"
    ) -> None:
        super().__init__()
        self.uri = uri
        self._open_from = open_from
        self._resumed_at: int | None = None
        self._resumes_here = 0
        response = open_from(0, None)
        self._body = response["Body"]
        self.etag: str | None = response.get("ETag")
        self.size: int | None = response.get("ContentLength")
        self.position = 0
        self.resumes = 0  # how often the read went on after a broken connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while True:
            try:
                chunk = self._body.read(len(view))
            except BotoCoreError as error:
                if not is_transient(error):
                    raise
                if self.size is not None and self.position >= self.size:
                    return 0  # broke after the last byte: nothing left to ask for
                self._resume()
                continue
            view[: len(chunk)] = chunk
            self.position += len(chunk)
            return len(chunk)

    def _resume(self) -> None:
        """Ask again for the rest of the object; the caller's retry budget covers the wait."""
        self._resumes_here = self._resumes_here + 1 if self._resumed_at == self.position else 1
        self._resumed_at = self.position
        if self._resumes_here > MAX_RESUMES_WITHOUT_PROGRESS:
            raise StorageError(
                f"reading {self.uri} broke {MAX_RESUMES_WITHOUT_PROGRESS} times at byte "
                f"{self.position} without getting further: the server answers but cannot "
                "send the object; check its health and read it again"
            )
        self._close_body()
        response = self._open_from(self.position, self.etag)
        self._body = response["Body"]
        self.resumes += 1
        # A store that ignores Range would send the object from its start again.
        expected = f"bytes {self.position}-"
        if not str(response.get("ContentRange", "")).startswith(expected):
            self._close_body()
            raise OSError(
                f"the S3 server answered a request for the rest of an object from byte "
                f"{self.position} with {response.get('ContentRange')!r}: it does not support "
                "ranged reads, so a broken read cannot go on; read the object again"
            )

    def _close_body(self) -> None:
        # A broken connection may fail to close; it is dropped either way.
        with contextlib.suppress(Exception):
            self._body.close()

    def close(self) -> None:
        if not self.closed:
            self._close_body()
        super().close()
