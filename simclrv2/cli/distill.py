"""`simclrv2 distill`: a student trained on the teacher's stored soft labels."""

from simclrv2.cli.common_flags import add_training_flags, load_run_config, object_store, run_step


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "distill",
        help="train a student on the unlabeled images from the teacher's stored soft labels",
    )
    add_training_flags(parser)
    parser.add_argument("--teacher", required=True, help="the finetune step's model.pt")
    parser.add_argument("--pseudo-labels", required=True, help="the pseudolabel step's output")
    parser.set_defaults(handler=_run_distill)


def _run_distill(args) -> int:
    from simclrv2.steps.distill import distill

    config = load_run_config(args)
    store = object_store(args)
    return run_step(
        "distill",
        lambda: distill(
            config,
            args.output,
            args.teacher,
            args.pseudo_labels,
            args.checkpoint_dir,
            args.max_steps,
            store,
        ),
    )
