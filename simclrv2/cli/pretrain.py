"""`simclrv2 pretrain`: contrastive pretraining on the unlabeled shards."""

import argparse

from simclrv2.cli.common_flags import add_training_flags, load_run_config, object_store, run_step


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="SimCLRv2 contrastive pretraining on a dataset's unlabeled shards",
        description="Pretrain encoder + projection head on the unlabeled split of a dataset "
        "written by `simclrv2 shard`. Resumes from the newest checkpoint when restarted. Run "
        "it with torchrun for several processes or GPUs.",
        epilog="examples:\n"
        "  simclrv2 pretrain --config run.yaml --dataset s3://datasets/fmnist "
        "--output s3://runs/r1/pretrain\n"
        "  torchrun --nproc_per_node 8 -m simclrv2.cli pretrain --config run.yaml "
        "--set pretrain.optimizer.epochs=800 --output s3://runs/r2/pretrain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_training_flags(parser)
    parser.set_defaults(handler=_run_pretrain)


def _run_pretrain(args) -> int:
    from simclrv2.steps.pretrain import pretrain

    config = load_run_config(args)
    store = object_store(args)
    return run_step(
        "pretrain",
        lambda: pretrain(config, args.output, args.checkpoint_dir, args.max_steps, store),
    )
