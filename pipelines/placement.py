"""Per-step placement from a profile: resources, GPUs, node pools, /dev/shm, S3 secret,
retries, timeout, caching, the non-root security context and image pulling, and for a step
on several nodes, the TrainJob's nodes. Everything here lands in the compiled YAML."""

from kfp import kubernetes

from pipelines.retry_window import parse_seconds, retry_policy
from simclrv2.multinode.node_spec import BACKEND_ENV, DEFAULT_RUNTIME, SPEC_ENV, NodeSpec

#: The image's non-root user and group (images/Dockerfile: USER 10001, group 0).
IMAGE_UID = 10001
IMAGE_GID = 0

#: The node label the NVIDIA GPU feature discovery puts on GPU nodes (the GPU model). Set only
#: when the profile's `gpu_product` (or `simclrv2 pipeline compile --gpu-product`) names one.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

STEP_KEYS = {
    "cpu_request", "cpu_limit", "memory_request", "memory_limit", "gpus", "accelerator",
    "node_selector", "tolerations", "shm_size", "retries", "backoff_duration",
    "backoff_factor", "backoff_max_duration", "timeout_seconds", "caching",
    "nodes", "processes_per_node",
}  # fmt: skip

#: Steps that can run on several nodes (a Kubeflow Trainer TrainJob; simclrv2/multinode/).
MULTINODE_STEPS = ("pretrain", "finetune", "supervised", "distill")
#: The KFP task of a multi-node step only launches and watches the TrainJob.
LAUNCHER_RESOURCES = {"cpu_request": "250m", "cpu_limit": "1", "memory_request": "512Mi",
                      "memory_limit": "1Gi"}  # fmt: skip
#: Per-node settings that move from the task to the TrainJob's nodes.
NODE_KEYS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit", "gpus",
             "accelerator", "node_selector", "tolerations", "shm_size")  # fmt: skip


def step_settings(profile: dict, step: str) -> dict:
    """steps.default overlaid with steps.<step>; unknown keys are rejected."""
    steps = profile.get("steps", {})
    settings = {**steps.get("default", {}), **steps.get(step, {})}
    unknown = set(settings) - STEP_KEYS
    if unknown:
        raise ValueError(
            f"profile {profile.get('name')}: unknown placement setting(s) {sorted(unknown)} "
            f"for step {step}; known: {sorted(STEP_KEYS)}"
        )
    return settings


def step_nodes(profile: dict, step: str) -> int:
    """How many nodes `step` runs on (steps.<step>.nodes, default 1)."""
    settings = step_settings(profile, step)
    nodes = settings.get("nodes", 1)
    where = f"profile {profile.get('name')}, step {step}"
    if type(nodes) is not int or nodes < 1:
        raise ValueError(f"{where}: nodes must be an integer >= 1, not {nodes!r}")
    if nodes > 1 and step not in MULTINODE_STEPS:
        raise ValueError(f"{where}: only the training steps {list(MULTINODE_STEPS)} can run on "
                         f"several nodes; set nodes: 1 (or remove it) for {step}")  # fmt: skip
    per_node = settings.get("processes_per_node")
    if per_node is not None and (type(per_node) is not int or per_node < 1):
        raise ValueError(f"{where}: processes_per_node must be an integer >= 1, not {per_node!r}")
    if per_node is not None and nodes == 1:
        raise ValueError(f"{where}: processes_per_node applies to multi-node steps (nodes > 1); "
                         "a one-node step starts one process per GPU of its pod")  # fmt: skip
    return nodes


def place(task, step: str, profile: dict, display_name: str | None = None):
    """Apply the profile's settings for `step` to one pipeline task; returns the task.

    With steps.<step>.nodes > 1 the task becomes a small CPU launcher and the per-node
    settings (GPUs, resources, node selector, tolerations, /dev/shm) go to the TrainJob it
    creates, carried in its environment as a NodeSpec (simclrv2/multinode/node_spec.py).
    """
    settings = step_settings(profile, step)
    where = f"profile {profile.get('name')}, step {step}"
    nodes = step_nodes(profile, step)
    if nodes > 1:
        task.set_env_variable(SPEC_ENV, node_spec(profile, step, settings, nodes).to_json())
        if profile.get("trainjob_backend"):  # kfp.local: local processes, not a cluster
            task.set_env_variable(BACKEND_ENV, str(profile["trainjob_backend"]))
        settings = {**{k: v for k, v in settings.items() if k not in NODE_KEYS},
                    **LAUNCHER_RESOURCES}  # fmt: skip
    task.set_display_name(display_name or step)
    task.set_container_image(profile["image"])
    # The kubelet refuses to start the step as root, whatever the image says.
    kubernetes.set_security_context(
        task,
        run_as_user=int(profile.get("run_as_user", IMAGE_UID)),
        run_as_group=int(profile.get("run_as_group", IMAGE_GID)),
        run_as_non_root=True,
    )
    if profile.get("image_pull_policy"):
        kubernetes.set_image_pull_policy(task, profile["image_pull_policy"])
    if profile.get("image_pull_secrets"):
        kubernetes.set_image_pull_secrets(task, list(profile["image_pull_secrets"]))
    for key, setter in (
        ("cpu_request", task.set_cpu_request),
        ("cpu_limit", task.set_cpu_limit),
        ("memory_request", task.set_memory_request),
        ("memory_limit", task.set_memory_limit),
    ):
        if key in settings:
            setter(str(settings[key]))
    node_selector = dict(settings.get("node_selector", {}))
    if settings.get("gpus", 0) > 0:
        task.set_accelerator_type(settings.get("accelerator", "nvidia.com/gpu"))
        task.set_accelerator_limit(int(settings["gpus"]))
        if profile.get("gpu_product"):  # unset: any GPU node the scheduler finds
            node_selector[GPU_PRODUCT_LABEL] = str(profile["gpu_product"])
    for label, value in node_selector.items():
        kubernetes.add_node_selector(task, label, value)
    for toleration in settings.get("tolerations", []):
        kubernetes.add_toleration(task, **toleration)
    if "shm_size" in settings:
        # DataLoader workers pass batches through shared memory; the default 64 MiB is not
        # enough for image batches.
        kubernetes.empty_dir_mount(
            task, "dshm", "/dev/shm", medium="Memory", size_limit=str(settings["shm_size"])
        )
    # A retried training step resumes from its checkpoints. The retry window covers every
    # attempt (pipelines/retry_window.py); the timeout bounds each attempt.
    retry = retry_policy(settings, where)
    if retry:
        task.set_retry(**retry)
    if "timeout_seconds" in settings:
        kubernetes.set_timeout(
            task, parse_seconds(settings["timeout_seconds"], where, "timeout_seconds")
        )
    task.set_caching_options(bool(settings.get("caching", False)))
    _connect_services(task, profile)
    return task


def node_spec(profile: dict, step: str, settings: dict, nodes: int) -> NodeSpec:
    """What each node of a multi-node step gets: the step's placement, the image, the
    non-root user, the S3 secret's name and keys (never values), the service endpoints."""
    gpus = int(settings.get("gpus", 0))
    accelerator = settings.get("accelerator", "nvidia.com/gpu")
    requests = {"cpu": settings.get("cpu_request"), "memory": settings.get("memory_request")}
    limits = {"cpu": settings.get("cpu_limit"), "memory": settings.get("memory_limit")}
    node_selector = {str(k): str(v) for k, v in settings.get("node_selector", {}).items()}
    if gpus:
        requests[accelerator] = limits[accelerator] = str(gpus)
        if profile.get("gpu_product"):
            node_selector[GPU_PRODUCT_LABEL] = str(profile["gpu_product"])
    resources = {
        kind: {k: str(v) for k, v in values.items() if v is not None}
        for kind, values in (("requests", requests), ("limits", limits))
    }
    s3 = profile["s3"]
    env = {"AWS_ENDPOINT_URL": s3["endpoint_url"]} if s3.get("endpoint_url") else {}
    if profile.get("pushgateway_url"):
        env["PUSHGATEWAY_URL"] = profile["pushgateway_url"]
    timeout = settings.get("timeout_seconds")
    where = f"profile {profile.get('name')}, step {step}"
    return NodeSpec(
        nodes=nodes,
        processes_per_node=int(settings.get("processes_per_node") or gpus or 1),
        image=profile["image"],
        resources={kind: values for kind, values in resources.items() if values},
        node_selector=node_selector,
        tolerations=[dict(t) for t in settings.get("tolerations", [])],
        shm_size=str(settings["shm_size"]) if "shm_size" in settings else None,
        run_as_user=int(profile.get("run_as_user", IMAGE_UID)),
        run_as_group=int(profile.get("run_as_group", IMAGE_GID)),
        image_pull_secrets=list(profile.get("image_pull_secrets", [])),
        env=env,
        secret_env={
            "AWS_ACCESS_KEY_ID": [s3["secret"], s3["access_key_field"]],
            "AWS_SECRET_ACCESS_KEY": [s3["secret"], s3["secret_key_field"]],
        },
        active_deadline_seconds=(
            parse_seconds(timeout, where, "timeout_seconds") if timeout is not None else None
        ),
        runtime=str(profile.get("trainer_runtime", DEFAULT_RUNTIME)),
    )


def _connect_services(task, profile: dict) -> None:
    """S3 endpoint and Pushgateway as plain env; the S3 keys only from a Kubernetes secret
    (never as literals in the YAML)."""
    s3 = profile["s3"]
    kubernetes.use_secret_as_env(
        task,
        s3["secret"],
        {
            s3["access_key_field"]: "AWS_ACCESS_KEY_ID",
            s3["secret_key_field"]: "AWS_SECRET_ACCESS_KEY",
        },
    )
    if s3.get("endpoint_url"):  # unset: AWS S3 itself
        task.set_env_variable("AWS_ENDPOINT_URL", s3["endpoint_url"])
    if profile.get("pushgateway_url"):
        task.set_env_variable("PUSHGATEWAY_URL", profile["pushgateway_url"])
