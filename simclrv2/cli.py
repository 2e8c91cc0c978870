"""The `simclrv2` command line. Each subcommand is a thin layer over a library function."""

import argparse
import os
import re
import sys
import traceback

from simclrv2 import __version__
from simclrv2.errors import (
    INTERRUPTED_EXIT,
    RUNTIME_EXIT,
    USAGE_EXIT,
    is_usage_error,
    message_of,
)

EXAMPLES = """examples:
  simclrv2 quickstart                     # the whole pipeline on 1% of Fashion-MNIST labels
  simclrv2 shard --source fashion-mnist --output s3://datasets/fmnist --label-fraction 0.01
  simclrv2 verify s3://datasets/fmnist
  simclrv2 quickstart --set pretrain.optimizer.epochs=10 --label-fraction 0.1
  simclrv2 params --depth 152 --width 3 --sk-ratio 0.0625
"""


def _add_quickstart(subparsers) -> None:
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
    _add_s3_flags(parser)
    parser.set_defaults(handler=_run_quickstart)


def _run_quickstart(args) -> int:
    from simclrv2.config.loading import load_config
    from simclrv2.config.run_config import RunConfig
    from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
    from simclrv2.steps.chain import run_chain

    config = load_config(RunConfig, args.config, args.set)
    labels = LabelSubsetSpec(fraction=args.label_fraction, seed=config.runtime.seed)
    run_chain(config, args.output, args.source, labels, _object_store(args))
    return 0


def _add_params(subparsers) -> None:
    parser = subparsers.add_parser(
        "params",
        help="count encoder parameters of a ResNet configuration without allocating it",
    )
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--sk-ratio", type=float, default=0.0)
    parser.add_argument("--cifar-stem", action="store_true")
    parser.set_defaults(handler=_run_params)


def _run_params(args) -> int:
    from simclrv2.models.parameter_count import encoder_parameter_count
    from simclrv2.models.resnet import EncoderConfig

    config = EncoderConfig(args.depth, args.width, args.sk_ratio, args.cifar_stem)
    count = encoder_parameter_count(config)
    sk = f"+SK({args.sk_ratio:g})" if args.sk_ratio else ""
    print(f"ResNet-{args.depth} {args.width:g}x{sk}: {count:,} parameters ({count / 1e6:.1f}M)")
    return 0


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


def _add_s3_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "S3",
        "default: the standard AWS_* environment variables; prefer them for secrets, "
        "since command-line flags are visible to other users in the process list",
    )
    group.add_argument("--s3-endpoint-url", help="default $AWS_ENDPOINT_URL")
    group.add_argument("--s3-access-key-id", help="default $AWS_ACCESS_KEY_ID")
    group.add_argument("--s3-secret-access-key", help="default $AWS_SECRET_ACCESS_KEY")
    group.add_argument("--s3-region", help="default $AWS_DEFAULT_REGION or us-east-1")


def _object_store(args):
    from simclrv2.storage.object_store import ObjectStore
    from simclrv2.storage.s3_client import S3Settings

    settings = S3Settings.from_env(
        endpoint_url=args.s3_endpoint_url,
        access_key_id=args.s3_access_key_id,
        secret_access_key=args.s3_secret_access_key,
        region=args.s3_region,
    )
    return ObjectStore(settings)


def _add_shard(subparsers) -> None:
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
    _add_s3_flags(parser)
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
    store = _object_store(args)
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


def _add_verify(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="re-hash every shard of a dataset and compare with its manifest"
    )
    parser.add_argument("dataset", help="the --output of the shard step (or its manifest.json)")
    parser.add_argument("--split", action="append", help="only this split (repeatable)")
    _add_s3_flags(parser)
    parser.set_defaults(handler=_run_verify)


def _run_verify(args) -> int:
    from simclrv2.shards.verify import load_manifest, verify_dataset

    store = _object_store(args)
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


def _add_pretrain(subparsers) -> None:
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
    _add_training_flags(parser)
    parser.set_defaults(handler=_run_pretrain)


def _add_run_config_flags(parser: argparse.ArgumentParser) -> None:
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


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    """What every training step takes: run config, output, checkpoints, step limit, S3."""
    _add_run_config_flags(parser)
    parser.add_argument("--output", required=True, help="folder or s3:// prefix for the model")
    parser.add_argument("--checkpoint-dir", help="default: OUTPUT/checkpoints")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (trials)")
    _add_s3_flags(parser)


def _run_step(name: str, run) -> int:
    """Run a (possibly torchrun-launched) training step; rank 0 reports where the model is."""
    from simclrv2.distributed.context import shutdown_distributed

    try:
        result = run()
    finally:
        shutdown_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[{name}] done: {result.steps} steps -> {result.model_uri}")
    return 0


def _load_run_config(args):
    from simclrv2.config.loading import load_config
    from simclrv2.config.run_config import RunConfig
    from simclrv2.storage.uri import is_s3_uri

    overrides = list(args.set)
    if args.dataset:
        overrides.append(f"data.dataset={args.dataset}")
    if args.config and is_s3_uri(args.config):  # what a multi-node launcher wrote
        from simclrv2.config.loading import load_config_text

        text = _object_store(args).read_bytes(args.config).decode()
        config = load_config_text(RunConfig, text, overrides)
    else:
        config = load_config(RunConfig, args.config, overrides)
    if not config.data.dataset:
        raise ValueError("no dataset: pass --dataset or set data.dataset in the config")
    return config


def _run_pretrain(args) -> int:
    from simclrv2.steps.pretrain import pretrain

    config = _load_run_config(args)
    store = _object_store(args)
    return _run_step(
        "pretrain",
        lambda: pretrain(config, args.output, args.checkpoint_dir, args.max_steps, store),
    )


def _add_finetune(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a pretrained model on the labeled shards (or train the baseline)",
        description="Fine-tune encoder + projection head[:k] + a new classifier on the "
        "labeled split. With --set finetune.from_scratch=true (no --pretrained) the same "
        "network is trained from random weights: the supervised baseline.",
    )
    _add_training_flags(parser)
    parser.add_argument("--pretrained", help="the pretrain step's model.pt")
    parser.set_defaults(handler=_run_finetune)


def _run_finetune(args) -> int:
    from simclrv2.steps.finetune import finetune

    config = _load_run_config(args)
    store = _object_store(args)
    return _run_step(
        "finetune",
        lambda: finetune(
            config, args.output, args.pretrained, args.checkpoint_dir, args.max_steps, store
        ),
    )


def _add_distill(subparsers) -> None:
    parser = subparsers.add_parser(
        "distill",
        help="train a student on the unlabeled images from the teacher's stored soft labels",
    )
    _add_training_flags(parser)
    parser.add_argument("--teacher", required=True, help="the finetune step's model.pt")
    parser.add_argument("--pseudo-labels", required=True, help="the pseudolabel step's output")
    parser.set_defaults(handler=_run_distill)


def _run_distill(args) -> int:
    from simclrv2.steps.distill import distill

    config = _load_run_config(args)
    store = _object_store(args)
    return _run_step(
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


def _add_pseudolabel(subparsers) -> None:
    parser = subparsers.add_parser(
        "pseudolabel",
        help="store the teacher's logits for every unlabeled image (sidecar shards)",
        description="Run the fine-tuned teacher over the unlabeled shards once and store its "
        "logits beside them, one sidecar shard per image shard, with a manifest, so that "
        "distillation never runs the teacher. Split the work with --num-parts/--part "
        "(separate jobs) or torchrun (ranks).",
    )
    _add_run_config_flags(parser)
    parser.add_argument("--teacher", required=True, help="the finetune step's model.pt")
    parser.add_argument("--output", required=True, help="folder or s3:// prefix")
    parser.add_argument("--num-parts", type=int, default=1)
    parser.add_argument("--part", type=int, help="only this part (0-based)")
    parser.add_argument("--batch-size", type=int, default=256)
    _add_s3_flags(parser)
    parser.set_defaults(handler=_run_pseudolabel)


def _run_pseudolabel(args) -> int:
    from simclrv2.distributed.context import shutdown_distributed
    from simclrv2.steps.pseudolabel import pseudolabel

    config = _load_run_config(args)
    try:
        result = pseudolabel(
            config, args.teacher, args.output, _object_store(args), part=args.part,
            num_parts=args.num_parts, batch_size=args.batch_size,
        )  # fmt: skip
    finally:
        shutdown_distributed()
    if result.manifest is not None:
        print(f"[pseudolabel] published {result.manifest_uri}")
    return 0


def _add_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="top-1/top-5, per-class accuracy and confusion matrices of models on the test set",
        epilog="example:\n  simclrv2 evaluate --config run.yaml --dataset s3://datasets/fmnist "
        "--model teacher=s3://runs/r1/finetune/model.pt "
        "--model student=s3://runs/r1/distill/model.pt --output s3://runs/r1/evaluate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_config_flags(parser)
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
    _add_s3_flags(parser)
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
    config = _load_run_config(args)
    evaluate(config, models, args.output, _object_store(args), batch_size=args.batch_size,
             pretrained=args.pretrained)  # fmt: skip
    return 0


def _add_pipeline(subparsers) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="the Kubeflow pipeline: compile, upload, run, schedule",
        description="Compile a profile into the pipeline YAML, and upload / run / schedule it "
        "on a Kubeflow Pipelines endpoint.",
    )
    commands = parser.add_subparsers(title="pipeline commands", metavar="COMMAND")
    compile_parser = commands.add_parser(
        "compile",
        help="profile(s) -> pipeline YAML (deterministic)",
        description="Compile each profile into <output-dir>/<profile name>.yaml. --image, "
        "--gpu-product and --set change what the profiles say for this compile only.",
    )
    compile_parser.add_argument(
        "profiles", nargs="+", help="profile YAML files, e.g. pipelines/profiles/tiny.yaml"
    )
    compile_parser.add_argument("--output-dir", default="pipelines/compiled")
    compile_parser.add_argument(
        "--image", metavar="REF",
        help="the image every step runs, e.g. ghcr.io/acme/simclrv2:0.1.0-gpu "
        "(default: the profile's image, the local tag `make images` builds)",
    )  # fmt: skip
    compile_parser.add_argument(
        "--gpu-product", metavar="NAME",
        help="pin every GPU step to nodes labelled nvidia.com/gpu.product=NAME, e.g. "
        "NVIDIA-H100-80GB-HBM3 (default: the profile's gpu_product; unset: any GPU node)",
    )  # fmt: skip
    compile_parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                                help="override one run-config setting (repeatable)")  # fmt: skip
    compile_parser.set_defaults(handler=_run_pipeline_compile)
    local_parser = commands.add_parser(
        "run-local",
        help="run the whole pipeline on this machine with kfp.local (make run)",
        description="Run every component of the pipeline as a subprocess in this environment "
        "(kfp.local), with datasets, models and the production model under --output (a "
        "folder, or s3:// with the AWS_* variables set), and print the results table.",
    )
    local_parser.add_argument("--profile", default="pipelines/profiles/tiny.yaml")
    local_parser.add_argument("--output", default="runs/pipeline", help="folder or s3:// prefix")
    local_parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                              help="a pipeline parameter, e.g. pretrain_epochs=5")  # fmt: skip
    local_parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                              help="override one run-config setting (repeatable)")  # fmt: skip
    local_parser.set_defaults(handler=_run_pipeline_local)
    docker_parser = commands.add_parser(
        "run-docker",
        help="run the whole pipeline with every step in our image (make run-docker)",
        description="Run every component in the step image with kfp.local's DockerRunner, "
        "as on a cluster. Data goes to the S3 server named by AWS_ENDPOINT_URL (with "
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), or to a SeaweedFS started on loopback "
        "for the run when that is unset. Needs a running Docker engine and the image "
        "(make images IMAGE_TARGETS=cpu).",
    )
    docker_parser.add_argument("--image", default="simclrv2:0.1.0-cpu")
    docker_parser.add_argument("--profile", default="pipelines/profiles/tiny.yaml")
    docker_parser.add_argument("--output", default="runs/pipeline-docker",
                               help="folder for KFP artifacts and the SeaweedFS data")  # fmt: skip
    docker_parser.add_argument("--bucket", default="mlpipeline")
    docker_parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                               help="a pipeline parameter, e.g. pretrain_epochs=5")  # fmt: skip
    docker_parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                               help="override one run-config setting (repeatable)")  # fmt: skip
    docker_parser.set_defaults(handler=_run_pipeline_docker)
    from simclrv2.kfp_client import add_pipeline_client_commands

    add_pipeline_client_commands(commands)


def _pipeline_parameters(items: list[str]) -> dict:
    import yaml

    parameters = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {item!r} must look like NAME=VALUE")
        parameters[name] = yaml.safe_load(value)
    return parameters


def _run_pipeline_local(args) -> int:
    from pipelines.local_run import run_local

    run_local(args.profile, args.output, _pipeline_parameters(args.param), args.set)
    return 0


def _run_pipeline_docker(args) -> int:
    from pipelines.docker_run import run_docker

    run_docker(
        args.profile,
        args.output,
        args.image,
        _pipeline_parameters(args.param),
        args.set,
        bucket=args.bucket,
    )
    return 0


def _run_pipeline_compile(args) -> int:
    from pathlib import Path

    from pipelines.compiler import compile_profile

    for profile in args.profiles:
        output = Path(args.output_dir) / f"{Path(profile).stem}.yaml"
        compile_profile(
            profile, output, image=args.image, gpu_product=args.gpu_product,
            config_overrides=args.set,
        )  # fmt: skip
        print(f"[pipeline] {profile} -> {output}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the error first: `simclrv2 shard: error: ...`, then how to get help.

    argparse prints the usage before the error; a user (and a log scanner) reads the first
    line, so it should say what is wrong. Sub-command parsers inherit this class.
    """

    def error(self, message: str):
        self.exit(
            USAGE_EXIT,
            f"{self.prog}: error: {message}\n{self.format_usage()}"
            f"run `{self.prog} --help` for every option\n",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="simclrv2",
        description="SimCLRv2: big self-supervised models are strong semi-supervised learners.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_quickstart(subparsers)
    _add_params(subparsers)
    _add_shard(subparsers)
    _add_verify(subparsers)
    _add_pretrain(subparsers)
    _add_finetune(subparsers)
    _add_pseudolabel(subparsers)
    _add_distill(subparsers)
    _add_evaluate(subparsers)
    _add_pipeline(subparsers)
    return parser


def _report(error: Exception, debug: bool) -> int:
    """One line on stderr that says what went wrong (the traceback too with --debug); the
    exit status: 2 when the user must change something, 1 when something failed."""
    if debug:
        traceback.print_exception(error)
    message = message_of(error)
    if is_usage_error(error) or _is_described(error):
        print(f"simclrv2: error: {message}", file=sys.stderr)
    else:  # not one of ours: the type says more than the message alone
        print(f"simclrv2: error: {type(error).__name__}: {message}", file=sys.stderr)
        if not debug:
            print("simclrv2: rerun with --debug to see where it failed", file=sys.stderr)
    return USAGE_EXIT if is_usage_error(error) else RUNTIME_EXIT


# Runtime failures whose messages already say what failed and what to do. Looked up by name
# in the modules already imported, so that reporting an error imports nothing.
_DESCRIBED = (
    ("simclrv2.storage.errors", "StorageError"),
    ("simclrv2.training.checkpoint", "CheckpointError"),
    ("simclrv2.kfp_client", "PipelineClientError"),
)


def _is_described(error: Exception) -> bool:
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    for module, name in _DESCRIBED:
        if module in sys.modules and isinstance(error, getattr(sys.modules[module], name)):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("simclrv2: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as error:  # one line, no traceback (unless --debug), exit 2 or 1
        return _report(error, args.debug)


if __name__ == "__main__":
    sys.exit(main())
