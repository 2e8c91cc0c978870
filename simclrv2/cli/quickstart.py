"""`simclrv2 quickstart`: every step of the pipeline in this process."""

from simclrv2.cli.common_flags import add_s3_flags, object_store


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="the whole pipeline on one machine: shard, pretrain, finetune + supervised "
        "baseline, pseudolabel, distill, evaluate (make run)",
        description="Run every step of the pipeline in this process, on a built-in dataset "
        "or an ImageFolder tree, with outputs under --output (a folder or s3:// prefix), "
        "and print the test accuracy of the teacher, the student and the supervised "
        "baseline trained on the same labels.",
    )
    parser.add_argument("--config", default="configs/quickstart.yaml", help="run config YAML")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting (repeatable)")  # fmt: skip
    parser.add_argument("--source", default="fashion-mnist", help="what the shard step reads")
    parser.add_argument("--label-fraction", type=float, default=0.01)
    parser.add_argument("--output", default="runs/quickstart", help="folder or s3:// prefix")
    add_s3_flags(parser)
    parser.set_defaults(handler=_run_quickstart)


def _run_quickstart(args) -> int:
    from simclrv2.config.loading import load_config
    from simclrv2.config.run_config import RunConfig
    from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
    from simclrv2.steps.chain import run_chain

    config = load_config(RunConfig, args.config, args.set)
    labels = LabelSubsetSpec(fraction=args.label_fraction, seed=config.runtime.seed)
    run_chain(config, args.output, args.source, labels, object_store(args))
    return 0
