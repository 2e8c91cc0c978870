"""Run the pipeline on this machine with kfp.local: by default every component as a subprocess
in the current environment (no cluster, no images); pipelines/docker_run.py passes a
DockerRunner instead. Outputs go to a local folder or to S3."""

import json
import logging
import os
import warnings
from pathlib import Path

from kfp import local

from pipelines.compiler import load_profile
from pipelines.local_retry_index import argo_retry_index
from pipelines.machine_sizing import size_for_machine
from pipelines.placement import step_nodes
from pipelines.simclrv2_pipeline import build_pipeline
from simclrv2.pipeline_support.retrain_decision import GATE_FOLDER, IDENTITY_NAME


def run_local(
    profile_path: str,
    output: str,
    parameters: dict | None = None,
    config_overrides: list[str] = (),
    print_fn=print,
    runner=None,
    image: str | None = None,
    pipeline_root: str | None = None,
) -> dict:
    """Returns the evaluate step's metrics, or None when the retrain gate decided not to
    train. Datasets, models and the production model go
    under `output` (a folder, or an s3:// prefix with the AWS_* variables set) unless
    `parameters` say otherwise; KFP's own artifacts go under the local folder
    `<output>/kfp-root` (kfp.local needs a local pipeline root) unless `pipeline_root` names
    another folder. `runner` defaults to a SubprocessRunner; `image` replaces the profile's
    image (it matters to a DockerRunner only)."""
    from simclrv2.config.loading import apply_overrides, from_dict
    from simclrv2.config.run_config import RunConfig
    from simclrv2.storage.object_store import ObjectStore
    from simclrv2.storage.uri import is_s3_uri, join_uri

    profile = load_profile(profile_path)
    if image:
        profile["image"] = image
    # The profile's S3 endpoint and Pushgateway are cluster addresses; on this machine the
    # steps use the ones this environment names (a task's own env would win over it).
    profile["s3"]["endpoint_url"] = os.environ.get("AWS_ENDPOINT_URL", "")
    profile["pushgateway_url"] = os.environ.get("PUSHGATEWAY_URL", "")
    # kfp.local retries as the profile says, but a cluster's backoff (minutes, for a node to
    # come back) only delays the error a local user is waiting for: retry after 1 s here.
    for settings in profile.get("steps", {}).values():
        settings.update(backoff_duration="1s", backoff_factor=1)
    multinode = [
        s for s in profile.get("steps", {}) if s != "default" and step_nodes(profile, s) > 1
    ]
    if multinode:
        # No Kubeflow Trainer here: the launcher drives local processes through the same code.
        profile["trainjob_backend"] = "local-processes"
    run_config = apply_overrides(profile["run_config"], list(config_overrides))
    from_dict(RunConfig, run_config)  # reject bad overrides before any work
    values = {
        **profile["parameters"],
        "dataset_uri": join_uri(output, "data"),
        "work_root": join_uri(output, "work"),
        "production": join_uri(output, "production"),
        "run_config": json.dumps(run_config, sort_keys=True),
        **size_for_machine(profile, parameters or {}, print_fn),
    }
    store = ObjectStore()

    def runs() -> set[str]:  # one gate record per run, in a folder named by its job id
        files = store.list_files(values["work_root"])
        return {uri for uri, _ in files if uri.endswith(f"/{GATE_FOLDER}/{IDENTITY_NAME}")}

    before = runs()
    root = Path(pipeline_root or Path("runs/local-kfp-root" if is_s3_uri(output) else output))
    if not pipeline_root:
        root = root / "kfp-root"
    logging.getLogger("kfp").setLevel(logging.WARNING)  # keep the steps' own progress readable
    local.init(
        runner=runner or local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root.resolve()),
    )
    print_fn(
        "[pipeline] kfp.local ignores the profile's Kubernetes settings (resources, GPUs, node "
        "selectors, timeouts); they apply on a cluster. Failed steps are retried as the profile "
        "says, after 1 s."
    )
    for step in multinode:
        print_fn(
            f"[pipeline] {step} runs on {step_nodes(profile, step)} nodes: here as local "
            "processes with the rendezvous a Kubeflow Trainer TrainJob would give them "
            "(simclrv2/multinode/local_backend.py)"
        )
    with warnings.catch_warnings(), argo_retry_index():
        # Said once above instead of once per task; and the image is the profile's, which
        # SubprocessRunner replaces with this environment on purpose.
        warnings.filterwarnings("ignore", message=r"Task '.*': settings \[")
        warnings.filterwarnings("ignore", message="You may be attemping to run a task")
        build_pipeline(profile)(**values)

    (gate,) = runs() - before
    decision = json.loads(store.read_bytes(gate))
    run_folder = gate.rsplit("/", 2)[0]
    print_fn(f"\n[pipeline] kfp.local run finished; outputs under {output}/")
    print_fn(f"  dataset version: {decision['dataset_uri']}")
    if not decision["train"]:
        print_fn(f"  no training: {decision['reason']}")
        return None
    metrics = json.loads(store.read_bytes(join_uri(run_folder, "evaluate", "metrics.json")))
    print_fn(f"  {'model':<12} {'top-1':>7} {'top-5':>7}")
    for name, result in metrics["models"].items():
        print_fn(f"  {name:<12} {result['top1']:>7.2%} {result['top5']:>7.2%}")
    print_fn(f"  evaluation report: {run_folder}/evaluate/report.html")
    decision = json.loads(store.read_bytes(join_uri(run_folder, "evaluate", "decision.json")))
    if decision["promote"]:
        production = f"{values['production']}/model.pt"
        print_fn(f"  promoted: the {decision['candidate']} is now production at {production}")
    else:
        print_fn(f"  {decision['reason']}")
    return metrics
