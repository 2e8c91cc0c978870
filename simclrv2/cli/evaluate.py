"""`simclrv2 evaluate`: accuracy, per-class accuracy and confusion matrices on the test set."""

import argparse

from simclrv2.cli.common_flags import (
    add_run_config_flags,
    add_s3_flags,
    load_run_config,
    object_store,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="top-1/top-5, per-class accuracy and confusion matrices of models on the test set",
        epilog="example:\n  simclrv2 evaluate --config run.yaml --dataset s3://datasets/fmnist "
        "--model teacher=s3://runs/r1/finetune/model.pt "
        "--model student=s3://runs/r1/distill/model.pt --output s3://runs/r1/evaluate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_config_flags(parser)
    parser.add_argument(
        "--model", action="append", required=True, metavar="NAME=URI",
        help="a model to evaluate (repeatable), e.g. student=s3://runs/r1/distill/model.pt",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="folder or s3:// prefix for the report")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--pretrained", metavar="URI",
        help="the pretrain step's model: adds linear and kNN evaluation of its frozen encoder",
    )  # fmt: skip
    add_s3_flags(parser)
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args) -> int:
    from simclrv2.steps.evaluate import evaluate

    models = {}
    for item in args.model:
        name, sep, uri = item.partition("=")
        if not sep or not name or not uri:
            raise ValueError(
                f"--model {item!r} must look like NAME=URI, e.g. "
                "teacher=s3://runs/r1/finetune/model.pt"
            )
        models[name] = uri
    config = load_run_config(args)
    evaluate(config, models, args.output, object_store(args), batch_size=args.batch_size,
             pretrained=args.pretrained)  # fmt: skip
    return 0
