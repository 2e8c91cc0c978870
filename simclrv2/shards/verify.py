"""On-demand integrity check: stream every shard and compare its sha256 with the manifest."""

import hashlib

from simclrv2.shards.manifest import MANIFEST_NAME, DatasetManifest
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import join_uri

_CHUNK = 8 * 2**20


def load_manifest(dataset_uri: str, store: ObjectStore | None = None) -> DatasetManifest:
    """The manifest of a dataset, given its folder/prefix or the manifest.json URI itself."""
    store = store or ObjectStore()
    uri = dataset_uri if dataset_uri.endswith(".json") else join_uri(dataset_uri, MANIFEST_NAME)
    if not store.exists(uri):
        raise FileNotFoundError(
            f"no dataset at {dataset_uri}: {uri} does not exist (a dataset exists only once its "
            "manifest is written; was the shard step run to the end?)"
        )
    return DatasetManifest.from_json(store.read_bytes(uri).decode(), origin=uri)


def verify_dataset(
    manifest: DatasetManifest, store: ObjectStore | None = None, splits=None, print_fn=print
) -> list[str]:
    """Re-hash every shard of `splits` (default all); returns the URIs that do not match."""
    store = store or ObjectStore()
    bad = []
    for name in splits or manifest.splits:
        for shard in manifest.split(name).shards:
            digest, size = hashlib.sha256(), 0
            try:
                stream = store.open_read(shard.uri)
            except FileNotFoundError:
                print_fn(f"[verify] MISSING {shard.uri}")
                bad.append(shard.uri)
                continue
            try:
                while chunk := stream.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            finally:
                stream.close()
            ok = digest.hexdigest() == shard.sha256 and size == shard.bytes
            print_fn(f"[verify] {'ok ' if ok else 'BAD'} {shard.uri} ({size} bytes)")
            if not ok:
                bad.append(shard.uri)
    return bad
