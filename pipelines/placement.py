"""Per-step placement from a profile: resources, GPUs, node pools, /dev/shm, S3 secret,
retries, timeout, caching, the non-root security context and image pulling. Everything here
lands in the compiled YAML."""

from kfp import kubernetes

from pipelines.retry_window import parse_seconds, retry_policy

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
}  # fmt: skip


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


def place(task, step: str, profile: dict, display_name: str | None = None):
    """Apply the profile's settings for `step` to one pipeline task; returns the task."""
    settings = step_settings(profile, step)
    where = f"profile {profile.get('name')}, step {step}"
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
