"""Run the whole pipeline with kfp.local's DockerRunner: every step in our image, as on a
cluster, with datasets and models on S3 (`make run-docker`).

The S3 server is the one named by AWS_ENDPOINT_URL (with AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY) or, when that is unset, a SeaweedFS started on this machine's loopback for
the run. The containers share the host's network, so both are reachable at the same address
from the steps and from here; the keys reach the containers as environment variables of the
run only (never in the compiled pipeline or the image).
"""

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from kfp import local

from pipelines.local_run import run_local

DEFAULT_BUCKET = "mlpipeline"
_S3_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def check_docker(image: str):
    """The Docker client, once the engine answers and `image` is present; else a RuntimeError
    that says what to do."""
    try:
        import docker
    except ImportError as error:
        raise RuntimeError(
            "the Python package `docker` is missing: pip install docker (make install has it)"
        ) from error
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise RuntimeError(
            f"no Docker engine answers ({error}): start one (dockerd, or Docker Desktop) "
            "or set DOCKER_HOST"
        ) from error
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as error:
        raise RuntimeError(
            f"image {image} is not on this Docker engine: build it with "
            "`make images IMAGE_TARGETS=cpu` (images/README.md), or pass --image"
        ) from error
    return client


@contextlib.contextmanager
def s3_for_run(
    work_dir: Path, data_dir: Path, bucket: str, print_fn=print
) -> Iterator[dict[str, str]]:
    """The AWS_* variables of the S3 server the run uses, with `bucket` present. A SeaweedFS
    started here keeps its objects in `data_dir`, so the next run finds the production model
    of this one (and promotes only a better student)."""
    from simclrv2.storage.s3_client import make_s3_client

    if os.environ.get("AWS_ENDPOINT_URL"):
        missing = [name for name in _S3_VARIABLES if not os.environ.get(name)]
        if missing:
            raise RuntimeError(
                f"AWS_ENDPOINT_URL is set but {', '.join(missing)} is not: set it, or unset "
                "AWS_ENDPOINT_URL to use a SeaweedFS started for this run"
            )
        variables = {name: os.environ[name] for name in _S3_VARIABLES}
        print_fn(f"[run-docker] S3: {variables['AWS_ENDPOINT_URL']} (from the environment)")
        server = None
    else:
        from pipelines.local_seaweedfs import start_seaweedfs

        server = start_seaweedfs(work_dir, data_dir=data_dir)
        variables = {
            "AWS_ENDPOINT_URL": server.endpoint_url,
            "AWS_ACCESS_KEY_ID": server.access_key_id,
            "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
        }
        print_fn(
            f"[run-docker] S3: SeaweedFS at {server.endpoint_url} for this run "
            f"(data in {data_dir}; started in {server.started_in_s:.1f} s)"
        )
    try:
        if server is not None:
            client = make_s3_client(server.settings)
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=bucket)
        yield variables
    finally:
        if server is not None:
            server.stop()


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """Sets `variables` in this process (the host side reads the results from S3 too)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_docker(
    profile_path: str,
    output: str,
    image: str,
    parameters: dict | None = None,
    config_overrides: list[str] = (),
    print_fn=print,
    bucket: str = DEFAULT_BUCKET,
) -> dict:
    """Runs the pipeline with every step in `image`; returns the evaluate step's metrics.
    KFP's local artifacts and the SeaweedFS data (kept between runs) go under the folder
    `output`; datasets, models and the production model under s3://<bucket>/simclrv2-docker/."""
    check_docker(image)
    output_dir = Path(output).resolve()
    pipeline_root = output_dir / "kfp-root"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    # The steps run as the image's non-root user and write their outputs into this folder,
    # which kfp.local mounts at the same path (sticky, like /tmp: nobody removes others' files).
    pipeline_root.chmod(0o1777)
    server_dir = output_dir / "seaweedfs" / time.strftime("%Y%m%d-%H%M%S")  # logs, config
    with (
        s3_for_run(server_dir, output_dir / "s3-data", bucket, print_fn) as variables,
        _environment(variables),
    ):
        runner = local.DockerRunner(
            network_mode="host",
            # The profile's Pushgateway is a cluster address; locally metrics are not pushed.
            environment={**variables, "PUSHGATEWAY_URL": os.environ.get("PUSHGATEWAY_URL", "")},
            shm_size="1g",  # DataLoader workers share batches through /dev/shm
        )
        print_fn(f"[run-docker] every step runs in {image} (kfp.local DockerRunner)")
        return run_local(
            profile_path,
            f"s3://{bucket}/simclrv2-docker",
            parameters,
            config_overrides,
            print_fn,
            runner=runner,
            image=image,
            pipeline_root=str(pipeline_root),
        )
