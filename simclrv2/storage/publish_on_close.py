"""The contract of every writer the pipeline uses: the target appears only on success.

A dataset shard or checkpoint half-written by a killed process must never look complete, so
a writer publishes its target (rename into place, complete the multipart upload) only when
`close()` succeeds; `abort()`, an exception in a `with` block or garbage collection without
close drops it. Bytes are counted and hashed (SHA-256) as they stream through, since
manifests record both.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from types import TracebackType

_log = logging.getLogger(__name__)


class PublishOnCloseWriter(io.BufferedIOBase):
    """Write-only, forward-only binary stream; subclasses implement `_write`, `close`, `abort`
    and set `self._opened = True` once their `__init__` has acquired its resources."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.bytes_written = 0
        self._sha256 = hashlib.sha256()
        self._opened = False
        # Set when a write failed and dropped the target: later writes (a tar trailer written
        # while cleaning up) raise it again, so the real cause is what the user sees.
        self._failure: BaseException | None = None

    def _write(self, view: memoryview) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        """Bytes written so far (tarfile's seekable modes ask; the stream only moves forward)."""
        return self.bytes_written

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write all of `data`; returns its length in bytes."""
        if self._failure is not None:
            raise self._failure
        if self.closed:
            raise ValueError(f"write to closed writer for {self.target}")
        view = memoryview(data).cast("B")
        self._sha256.update(view)
        self.bytes_written += len(view)
        self._write(view)
        return len(view)

    def sha256_hex(self) -> str:
        """SHA-256 (hex) of all bytes written so far; the whole target's once closed."""
        return self._sha256.hexdigest()

    def __enter__(self) -> PublishOnCloseWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort_quietly()

    def _abort_quietly(self) -> None:
        """Abort after an error: the original error matters more than a failed clean-up."""
        try:
            self.abort()
        except Exception as abort_error:
            _log.warning("could not drop the unfinished %s: %s", self.target, abort_error)

    def __del__(self) -> None:
        # io.IOBase.__del__ would close() and so publish a truncated target: abort instead.
        if not self.closed and self._opened:
            warnings.warn(
                f"writer for {self.target} was never closed: dropped", ResourceWarning, stacklevel=2
            )
            self._abort_quietly()
