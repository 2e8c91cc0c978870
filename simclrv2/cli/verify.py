"""`simclrv2 verify`: re-hash a dataset's shards against its manifest."""

import sys

from simclrv2.cli.common_flags import add_s3_flags, object_store
from simclrv2.errors import RUNTIME_EXIT


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="re-hash every shard of a dataset and compare with its manifest"
    )
    parser.add_argument("dataset", help="the --output of the shard step (or its manifest.json)")
    parser.add_argument("--split", action="append", help="only this split (repeatable)")
    add_s3_flags(parser)
    parser.set_defaults(handler=_run_verify)


def _run_verify(args) -> int:
    from simclrv2.shards.verify import load_manifest, verify_dataset

    store = object_store(args)
    manifest = load_manifest(args.dataset, store)
    bad = verify_dataset(manifest, store, args.split)
    if bad:
        # The check's answer, not a usage error: exit 1, as sha256sum -c.
        total = sum(len(manifest.split(name).shards) for name in args.split or manifest.splits)
        print(
            f"simclrv2: error: {len(bad)} of {total} shards do not match the manifest (BAD or "
            "MISSING above): the dataset changed after it was published; shard the source "
            "again to a new --output",
            file=sys.stderr,
        )
        return RUNTIME_EXIT
    print("[verify] every shard matches its manifest checksum")
    return 0
