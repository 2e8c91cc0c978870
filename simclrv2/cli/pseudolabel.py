"""`simclrv2 pseudolabel`: the teacher's logits for every unlabeled image."""

from simclrv2.cli.common_flags import (
    add_run_config_flags,
    add_s3_flags,
    load_run_config,
    object_store,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pseudolabel",
        help="store the teacher's logits for every unlabeled image (sidecar shards)",
        description="Run the fine-tuned teacher over the unlabeled shards once and store its "
        "logits beside them, one sidecar shard per image shard, with a manifest, so that "
        "distillation never runs the teacher. Split the work with --num-parts/--part "
        "(separate jobs) or torchrun (ranks).",
    )
    add_run_config_flags(parser)
    parser.add_argument("--teacher", required=True, help="the finetune step's model.pt")
    parser.add_argument("--output", required=True, help="folder or s3:// prefix")
    parser.add_argument("--num-parts", type=int, default=1)
    parser.add_argument("--part", type=int, help="only this part (0-based)")
    parser.add_argument("--batch-size", type=int, default=256)
    add_s3_flags(parser)
    parser.set_defaults(handler=_run_pseudolabel)


def _run_pseudolabel(args) -> int:
    from simclrv2.distributed.context import shutdown_distributed
    from simclrv2.steps.pseudolabel import pseudolabel

    config = load_run_config(args)
    try:
        result = pseudolabel(
            config, args.teacher, args.output, object_store(args), part=args.part,
            num_parts=args.num_parts, batch_size=args.batch_size,
        )  # fmt: skip
    finally:
        shutdown_distributed()
    if result.manifest is not None:
        print(f"[pseudolabel] published {result.manifest_uri}")
    return 0
