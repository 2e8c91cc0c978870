"""The record that marks one sidecar shard done, `{output}/_done/pseudo-{i:05d}.json`: its
size, sha256 and the fingerprint of the inputs, so a restarted job skips it."""

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

from simclrv2.shards.manifest import ShardInfo
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import join_uri

DONE_FOLDER = "_done"


def record_uri(output: str, index: int) -> str:
    return join_uri(output, DONE_FOLDER, f"pseudo-{index:05d}.json")


def write_record(store: ObjectStore, output: str, index: int, info: ShardInfo, fingerprint):
    record = {"fingerprint": fingerprint, "sidecar": dataclasses.asdict(info)}
    store.write_bytes(record_uri(output, index), json.dumps(record, indent=1).encode())


def read_record(store: ObjectStore, output: str, index: int, fingerprint: str):
    """The ShardInfo of a sidecar done with these inputs, else None."""
    uri = record_uri(output, index)
    if not store.exists(uri):
        return None
    record = json.loads(store.read_bytes(uri))
    return ShardInfo(**record["sidecar"]) if record["fingerprint"] == fingerprint else None


def read_records(store: ObjectStore, output: str, indices: list[int], fingerprint: str):
    """read_record for many shards, 16 lookups at a time."""
    if not indices:
        return []
    first = [read_record(store, output, indices[0], fingerprint)]  # creates the S3 client
    with ThreadPoolExecutor(max_workers=16) as pool:
        rest = pool.map(lambda i: read_record(store, output, i, fingerprint), indices[1:])
        return first + list(rest)
