"""One sidecar shard: the teacher's logits of one image shard, sample for sample."""

import numpy as np
import webdataset as wds

from simclrv2.pseudolabels.shard_images import ShardChunk
from simclrv2.shards.manifest import ShardInfo
from simclrv2.shards.paired_loader import LOGITS, SKIPPED, encode_logits
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import join_uri


def sidecar_uri(output: str, index: int) -> str:
    return join_uri(output, f"pseudo-{index:05d}.tar")


class SidecarWriter:
    """One sidecar shard, streamed to its URI and published only when closed (multipart
    upload on S3, temp file + rename locally); a fixed tar mtime makes the same logits give
    the same bytes."""

    def __init__(self, store: ObjectStore, uri: str):
        self.uri = uri
        self.samples = 0
        self._stream = store.open_write(uri)
        self._tar = wds.TarWriter(self._stream, encoder=False, mtime=0)

    def write(self, key: str, logits: np.ndarray | None) -> None:
        """logits: float32 (num_classes,), or None for an image that could not be decoded."""
        if logits is None:
            member = {SKIPPED: b"the image could not be decoded\n"}
        else:
            member = {LOGITS: encode_logits(logits)}
        self._tar.write({"__key__": key, **member})
        self.samples += 1

    def write_chunk(self, chunk: ShardChunk, logits: np.ndarray | None) -> None:
        """The chunk's samples in order; logits holds one row per decoded image."""
        rows = iter(() if logits is None else logits)
        for key, decoded in zip(chunk.keys, chunk.decoded, strict=True):
            self.write(key, next(rows) if decoded else None)

    def close(self) -> ShardInfo:
        self._tar.close()
        self._stream.close()
        return ShardInfo(
            self.uri, self.samples, self._stream.bytes_written, self._stream.sha256_hex()
        )

    def abort(self) -> None:
        """Drop the sidecar: it never appears."""
        self._stream.abort()
