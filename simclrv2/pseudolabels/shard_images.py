"""Image shards read whole and in stored order, in chunks of a batch: the order the sidecars
mirror sample for sample."""

from collections import deque
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch

from simclrv2.shards.loader import SampleDecoder, ShardStreams
from simclrv2.shards.manifest import ShardInfo
from simclrv2.shards.paired_loader import tar_samples
from simclrv2.storage.s3_client import S3Settings


def decode_in_order(samples: Iterator[dict], decoder: SampleDecoder) -> Iterator[tuple]:
    """(key, image) for every sample in stored order; image is None where `decoder` (a
    SampleDecoder with keys) skipped the sample as undecodable (it counts, logs and limits
    those). The keys handed to the decoder are remembered until it yields or skips them."""
    pending = deque()

    def remembered():
        for sample in samples:
            pending.append(sample["__key__"])
            yield sample

    for image, _, key in decoder(remembered()):
        while pending[0] != key:  # skipped by the decoder
            yield pending.popleft(), None
        pending.popleft()
        yield key, image
    while pending:
        yield pending.popleft(), None


class ShardChunk(NamedTuple):
    """Up to batch_size consecutive samples of one image shard."""

    shard: int  # index of the image shard
    keys: list[str]
    images: torch.Tensor | None  # the decodable ones, stacked; None if there are none
    decoded: list[bool]  # per key: whether its image is in `images`
    last: bool  # the shard's final chunk


class ShardImages(torch.utils.data.IterableDataset):
    """Chunks of whole image shards in stored order (no shuffle, no resampling). Each
    DataLoader worker takes whole shards, so every shard's chunks arrive in order."""

    def __init__(
        self,
        shards: list[tuple[int, ShardInfo]],
        transform: Callable,
        read_mode: str | None,
        max_corrupt_fraction: float,
        batch_size: int,
        s3_settings: S3Settings | None,
    ):
        self.shards = shards
        self.transform = transform
        self.read_mode = read_mode
        self.max_corrupt_fraction = max_corrupt_fraction
        self.batch_size = batch_size
        self.streams = ShardStreams(s3_settings)  # one store per process

    def __iter__(self) -> Iterator[ShardChunk]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        decoder = SampleDecoder(
            self.transform, False, self.read_mode, self.max_corrupt_fraction, with_keys=True
        )
        for index, shard in self.shards[worker::workers]:
            yield from self._chunks(index, shard, decoder)

    def _chunks(self, index: int, shard: ShardInfo, decoder) -> Iterator[ShardChunk]:
        stream = self.streams.store().open_read(shard.uri)
        try:
            keys, images, count = [], [], 0
            for key, image in decode_in_order(tar_samples(stream, shard.uri), decoder):
                if len(keys) == self.batch_size:  # full, and more follow: not the last
                    yield self._chunk(index, keys, images, last=False)
                    keys, images = [], []
                keys.append(key)
                images.append(image)
                count += 1
        finally:
            stream.close()
        if count != shard.samples:
            raise ValueError(
                f"image shard {shard.uri} holds {count} samples but the manifest says "
                f"{shard.samples}: the dataset was modified after publishing; re-shard it"
            )
        yield self._chunk(index, keys, images, last=True)

    @staticmethod
    def _chunk(index: int, keys: list, images: list, last: bool) -> ShardChunk:
        decodable = [image for image in images if image is not None]
        return ShardChunk(
            shard=index,
            keys=keys,
            images=torch.stack(decodable) if decodable else None,
            decoded=[image is not None for image in images],
            last=last,
        )
