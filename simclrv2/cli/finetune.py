"""`simclrv2 finetune`: fine-tuning on the labeled shards, or the supervised baseline."""

from simclrv2.cli.common_flags import add_training_flags, load_run_config, object_store, run_step


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a pretrained model on the labeled shards (or train the baseline)",
        description="Fine-tune encoder + projection head[:k] + a new classifier on the "
        "labeled split. With --set finetune.from_scratch=true (no --pretrained) the same "
        "network is trained from random weights: the supervised baseline.",
    )
    add_training_flags(parser)
    parser.add_argument("--pretrained", help="the pretrain step's model.pt")
    parser.set_defaults(handler=_run_finetune)


def _run_finetune(args) -> int:
    from simclrv2.steps.finetune import finetune

    config = load_run_config(args)
    store = object_store(args)
    return run_step(
        "finetune",
        lambda: finetune(
            config, args.output, args.pretrained, args.checkpoint_dir, args.max_steps, store
        ),
    )
