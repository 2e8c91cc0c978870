"""`simclrv2 pipeline`: compile the pipeline, run it locally (kfp.local, Docker), and the KFP
client commands (upload, run, schedule)."""


def register(subparsers) -> None:
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
    from simclrv2.cli.pipeline_client import add_pipeline_client_commands

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
