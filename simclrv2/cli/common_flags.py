"""Flags and helpers several commands share: S3 settings, the run config, a training step's
outputs, and running a (possibly torchrun-launched) step."""

import argparse
import os


def add_s3_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "S3",
        "default: the standard AWS_* environment variables; prefer them for secrets, "
        "since command-line flags are visible to other users in the process list",
    )
    group.add_argument("--s3-endpoint-url", help="default $AWS_ENDPOINT_URL")
    group.add_argument("--s3-access-key-id", help="default $AWS_ACCESS_KEY_ID")
    group.add_argument("--s3-secret-access-key", help="default $AWS_SECRET_ACCESS_KEY")
    group.add_argument("--s3-region", help="default $AWS_DEFAULT_REGION or us-east-1")


def object_store(args):
    from simclrv2.storage.object_store import ObjectStore
    from simclrv2.storage.s3_client import S3Settings

    settings = S3Settings.from_env(
        endpoint_url=args.s3_endpoint_url,
        access_key_id=args.s3_access_key_id,
        secret_access_key=args.s3_secret_access_key,
        region=args.s3_region,
    )
    return ObjectStore(settings)


def add_run_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="run configuration YAML, a file or s3:// URI (see configs/)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set pretrain.optimizer.epochs=10 (repeatable)",
    )
    parser.add_argument("--dataset", help="the shard step's output (sets data.dataset)")


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """What every training step takes: run config, output, checkpoints, step limit, S3."""
    add_run_config_flags(parser)
    parser.add_argument("--output", required=True, help="folder or s3:// prefix for the model")
    parser.add_argument("--checkpoint-dir", help="default: OUTPUT/checkpoints")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (trials)")
    add_s3_flags(parser)


def run_step(name: str, run) -> int:
    """Run a (possibly torchrun-launched) training step; rank 0 reports where the model is."""
    from simclrv2.distributed.context import shutdown_distributed

    try:
        result = run()
    finally:
        shutdown_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[{name}] done: {result.steps} steps -> {result.model_uri}")
    return 0


def load_run_config(args):
    from simclrv2.config.loading import load_config
    from simclrv2.config.run_config import RunConfig
    from simclrv2.storage.uri import is_s3_uri

    overrides = list(args.set)
    if args.dataset:
        overrides.append(f"data.dataset={args.dataset}")
    if args.config and is_s3_uri(args.config):  # what a multi-node launcher wrote
        from simclrv2.config.loading import load_config_text

        text = object_store(args).read_bytes(args.config).decode()
        config = load_config_text(RunConfig, text, overrides)
    else:
        config = load_config(RunConfig, args.config, overrides)
    if not config.data.dataset:
        raise ValueError("no dataset: pass --dataset or set data.dataset in the config")
    return config
