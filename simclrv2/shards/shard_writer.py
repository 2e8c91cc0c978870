"""Rolling WebDataset tar writer: samples in, shards of bounded size out, each streamed.

Each shard is streamed to its URI (multipart upload on S3, temp file + rename locally) and
only appears when complete; memory holds at most one upload part. Tar headers carry a fixed
mtime so the same samples always make byte-identical shards (and the same sha256).
"""

from types import TracebackType

import webdataset as wds

from simclrv2.shards.manifest import ShardInfo
from simclrv2.storage.uri import join_uri


class RollingShardWriter:
    """Writes samples to `{base_uri}/{prefix}-{index:05d}.tar`, starting a new shard once the
    current one holds `max_samples` samples or `max_bytes` bytes (so a shard exceeds
    max_bytes by at most one sample, plus tar's end blocks and padding to a 10 KiB record)."""

    def __init__(self, store, base_uri: str, prefix: str, max_samples: int, max_bytes: int):
        if max_samples < 1 or max_bytes < 1:
            raise ValueError("shard limits must be positive (max samples and max bytes)")
        self.store = store
        self.base_uri = base_uri
        self.prefix = prefix
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.shards: list[ShardInfo] = []
        self._context = None  # the open_write context of the current shard
        self._stream = None
        self._tar = None
        self._samples = 0

    def _open_next(self) -> None:
        uri = join_uri(self.base_uri, f"{self.prefix}-{len(self.shards):05d}.tar")
        self._uri = uri
        self._context = self.store.open_write(uri)
        self._stream = self._context.__enter__()
        # An int mtime: a float one makes tarfile add a PAX header to every member (+2 KiB).
        self._tar = wds.TarWriter(self._stream, encoder=False, mtime=0)
        self._samples = 0

    def _close_current(self) -> None:
        self._tar.close()
        self._context.__exit__(None, None, None)
        self.shards.append(
            ShardInfo(
                uri=self._uri,
                samples=self._samples,
                bytes=self._stream.bytes_written,
                sha256=self._stream.sha256_hex(),
            )
        )
        self._tar = self._stream = self._context = None

    def write(self, sample: dict[str, bytes | str]) -> None:
        """sample: {"__key__": str, "<ext>": bytes, ...} with every value already encoded."""
        if self._tar is not None and (
            self._samples >= self.max_samples or self._tar.tarstream.offset >= self.max_bytes
        ):
            self._close_current()
        if self._tar is None:
            self._open_next()
        self._tar.write(sample)
        self._samples += 1

    def close(self) -> list[ShardInfo]:
        if self._tar is not None:
            self._close_current()
        return self.shards

    def abort(self, error: BaseException) -> None:
        """Drop the shard being written: it never appears. Finished shards stay, unpublished
        (no manifest names them) and are overwritten by the next attempt."""
        if self._context is not None:
            try:
                self._tar.close()  # finish the tar stream into the writer that is discarded
            finally:
                self._context.__exit__(type(error), error, error.__traceback__)
            self._tar = self._stream = self._context = None

    def __enter__(self) -> "RollingShardWriter":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)
