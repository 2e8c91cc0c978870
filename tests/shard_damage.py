"""Damage a published dataset the way storage does: bytes rot, sizes stay.

The shard step refuses undecodable images, so tests of what the loaders do with one spoil a
sample after publishing: sizes still match the manifest (training's start-up check passes),
and the image no longer decodes.
"""

import tarfile


def spoil_member(manifest, split: str, member: str) -> None:
    """Overwrite the tar member `member` (e.g. "dog_dog_0.jpg") of `split` with zeros."""
    for shard in manifest.split(split).shards:
        with tarfile.open(shard.uri) as tar:
            found = [m for m in tar.getmembers() if m.name == member]
        if found:
            with open(shard.uri, "r+b") as stream:
                stream.seek(found[0].offset_data)
                stream.write(bytes(found[0].size))
            return
    raise AssertionError(f"{member} is in no {split} shard")
