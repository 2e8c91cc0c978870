"""`simclrv2 shard`: images -> WebDataset shards and a manifest."""

import argparse
import re

from simclrv2.cli.common_flags import add_s3_flags, object_store

SHARD_EXAMPLES = """examples:
  # Fashion-MNIST (Debian package dataset-fashion-mnist), 1% labels, to S3
  export AWS_ENDPOINT_URL=http://127.0.0.1:8333 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
  simclrv2 shard --source fashion-mnist --output s3://datasets/fmnist-1pct --label-fraction 0.01

  # an ImageNet-layout tree (train/<class>/*.JPEG, val/<class>/*.JPEG) with the official
  # 10% subset, 1 GiB shards, in 8 parallel parts run as separate jobs, then published
  simclrv2 shard --source s3://raw/imagenet --output s3://datasets/in-10pct \\
      --label-file 10percent.txt --max-bytes-per-shard 1GiB --num-parts 8 --part 3
  simclrv2 shard --source s3://raw/imagenet --output s3://datasets/in-10pct \\
      --label-file 10percent.txt --max-bytes-per-shard 1GiB --num-parts 8 --publish

  # a local folder, 13 labeled images per class
  simclrv2 shard --source ./my-images --output ./shards --labels-per-class 13
"""


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    """'256MiB', '1GB', '1048576' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: use bytes or a unit, e.g. 256MiB, 1GiB, 500MB"
        )
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "shard",
        help="images -> WebDataset shards + manifest on S3 or a folder (labeled/unlabeled/test)",
        description="Write a dataset as WebDataset tar shards: the label subset of the "
        "training split, the whole training split without labels, and the test split, plus "
        "a manifest.json written last. Re-running with the same inputs does nothing; a "
        "different dataset is never written over an existing one.",
        epilog=SHARD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--source",
        required=True,
        help="fashion-mnist, mnist, cifar10, stl10, or an ImageFolder root "
        "(folder or s3://bucket/prefix holding train/<class>/ and val/ or test/)",
    )
    parser.add_argument("--source-root", help="folder of a built-in dataset's files")
    parser.add_argument("--output", required=True, help="s3://bucket/prefix or a local folder")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--label-fraction", type=float, help="e.g. 0.01 or 0.1 (default 0.01)")
    labels.add_argument("--labels-per-class", type=int, help="labeled images per class")
    labels.add_argument("--label-file", help="file names, one per line (1percent.txt format)")
    parser.add_argument("--seed", type=int, default=0, help="label subset and sample order")
    parser.add_argument("--max-samples-per-shard", type=int, default=10_000)
    parser.add_argument("--max-bytes-per-shard", type=parse_size, default="256MiB")
    parser.add_argument("--num-parts", type=int, default=1, help="independent ranges of work")
    step = parser.add_mutually_exclusive_group()
    step.add_argument("--part", type=int, help="write only this part (0-based), no manifest")
    step.add_argument("--publish", action="store_true", help="only merge parts into manifest")
    add_s3_flags(parser)
    parser.set_defaults(handler=_run_shard)


def _run_shard(args) -> int:
    from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
    from simclrv2.shards import shard_dataset as step

    if args.labels_per_class is None and args.label_file is None and args.label_fraction is None:
        args.label_fraction = 0.01
    request = step.ShardRequest(
        source=args.source,
        output=args.output,
        label_subset=LabelSubsetSpec(
            fraction=args.label_fraction,
            per_class=args.labels_per_class,
            file_list=args.label_file,
            seed=args.seed,
        ),
        seed=args.seed,
        max_samples_per_shard=args.max_samples_per_shard,
        max_bytes_per_shard=args.max_bytes_per_shard,
        source_root=args.source_root,
        num_parts=args.num_parts,
    )
    store = object_store(args)
    if args.part is None and not args.publish:
        manifest = step.shard_dataset(request, store)
    else:
        store.check_bucket(request.output)
        plan = step.make_plan(request, store)
        if args.publish:
            manifest = step.publish(plan, store)
        else:
            step.write_part(plan, args.part, store)
            print(f"[shard] part {args.part + 1}/{args.num_parts} written")
            return 0
    for name, split in manifest.splits.items():
        print(
            f"[shard] {name:<9} {split.samples:>9,} samples in {len(split.shards):>4} shards, "
            f"{split.bytes / 1e6:,.1f} MB"
        )
    print(f"[shard] dataset {manifest.fingerprint[:12]} published at {args.output}")
    return 0
