"""`simclrv2 import-tf`: turn a released SimCLRv2 TensorFlow checkpoint into a model artifact."""

from simclrv2.cli.common_flags import add_s3_flags, object_store


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-tf",
        help="import an official SimCLRv2 TF1/TF2 checkpoint (no TensorFlow needed)",
        description=(
            "Read a checkpoint of google-research/simclr (TF1 model.ckpt-N, TF2 ckpt-N or a "
            "TF2 SavedModel folder; local or s3://) and write our model artifact. The network "
            "(depth, width, SK, head) is read from the variables. A checkpoint with a "
            "supervised head becomes a classifier (the fine-tuned releases), otherwise, or "
            "with --contrastive, an encoder + projection head to fine-tune from."
        ),
    )
    parser.add_argument("checkpoint", help="checkpoint prefix, its .index, or its folder")
    parser.add_argument("--output", required=True, help="model file to write (path or s3://)")
    parser.add_argument(
        "--contrastive",
        action="store_true",
        help="keep encoder + whole projection head and drop any supervised head "
        "(what the pipeline's pretrained_model fine-tunes from)",
    )
    parser.add_argument(
        "--fine-tune-layer",
        type=int,
        help="classifier input: projection layer k (default 1, as the fine-tuned releases; "
        "0 for the linear-evaluation head of the pretrained releases)",
    )
    parser.add_argument(
        "--ema", action="store_true", help="use the exponential moving averages (TF1 releases)"
    )
    add_s3_flags(parser)
    parser.set_defaults(handler=_run_import)


def _run_import(args) -> int:
    from simclrv2.tf_import.import_to_artifact import import_tf_checkpoint

    result = import_tf_checkpoint(
        args.checkpoint,
        args.output,
        object_store(args),
        contrastive=args.contrastive,
        fine_tune_layer=args.fine_tune_layer,
        use_ema=args.ema,
    )
    print(f"[import-tf] {result.summary()}")
    print(f"[import-tf] model written to {args.output}")
    return 0
