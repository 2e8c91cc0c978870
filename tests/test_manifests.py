"""The Kubernetes manifests under manifests/: our kustomize overlay rendered offline with
`kubectl kustomize` and every document validated against the Kubernetes 1.32 schemas, the kind
cluster configs, the pins of the (remote, not rendered here) KFP 2.17.0 and Kubeflow Trainer
v2.3.0 installs, and our ClusterTrainingRuntime checked against Trainer's API models."""

import base64
import copy
import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
OVERLAY = MANIFESTS / "overlays" / "simclrv2"
PROFILE = yaml.safe_load((ROOT / "pipelines" / "profiles" / "tiny.yaml").read_text())
KUBERNETES_VERSION = "1.32"

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl (with built-in kustomize) is not on PATH"
)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The overlay rendered from a temporary copy holding s3-credentials.env made from the
    committed .example (the real env file is git-ignored)."""
    copy = tmp_path_factory.mktemp("overlay") / "simclrv2"
    shutil.copytree(OVERLAY, copy, ignore=shutil.ignore_patterns("s3-credentials.env"))
    shutil.copy(copy / "s3-credentials.env.example", copy / "s3-credentials.env")
    result = subprocess.run(
        [KUBECTL, "kustomize", str(copy)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert docs
    return docs


def find(docs, kind, name, namespace=None):
    matches = [
        doc
        for doc in docs
        if doc["kind"] == kind
        and doc["metadata"]["name"] == name
        and doc["metadata"].get("namespace") == namespace
    ]
    assert len(matches) == 1, f"expected one {kind} {namespace}/{name}, got {len(matches)}"
    return matches[0]


def test_overlay_example_env_is_committed_and_real_env_is_ignored():
    example = (OVERLAY / "s3-credentials.env.example").read_text()
    keys = dict(
        line.split("=", 1)
        for line in example.splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(keys) == {PROFILE["s3"]["access_key_field"], PROFILE["s3"]["secret_key_field"]}
    assert all(value.startswith("REPLACE_ME") for value in keys.values())
    assert "s3-credentials.env" in (OVERLAY / ".gitignore").read_text().split()


@needs_kubectl
def test_overlay_has_exactly_the_expected_objects(rendered):
    got = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in rendered}
    assert got == {
        ("Namespace", None, "simclrv2"),
        ("Secret", "kubeflow", "mlpipeline-minio-artifact"),
        ("ConfigMap", "kubeflow", "kfp-launcher"),
        ("ServiceAccount", "kubeflow", "simclrv2-pipeline-runner"),
        ("Role", "kubeflow", "simclrv2-pipeline-runner"),
        ("RoleBinding", "kubeflow", "simclrv2-pipeline-runner"),
        ("ClusterRole", None, "simclrv2-pipeline-runner"),
        ("ClusterRoleBinding", None, "simclrv2-pipeline-runner"),
        ("Deployment", "simclrv2", "pushgateway"),
        ("Service", "simclrv2", "pushgateway"),
        ("ConfigMap", "simclrv2", "pushgateway-scrape-config"),
        ("NetworkPolicy", "simclrv2", "pushgateway-ingress"),
    }


@needs_kubectl
def test_s3_secret_matches_the_profile_and_holds_only_placeholders(rendered):
    secret = find(rendered, "Secret", PROFILE["s3"]["secret"], "kubeflow")
    assert set(secret["data"]) == {
        PROFILE["s3"]["access_key_field"],
        PROFILE["s3"]["secret_key_field"],
    }
    for value in secret["data"].values():
        decoded = base64.b64decode(value).decode()
        assert decoded.startswith("REPLACE_ME"), decoded
        assert not re.search(r"(AKIA|ASIA)[0-9A-Z]{16}", decoded)


def test_no_real_looking_aws_keys_anywhere_under_manifests():
    for path in MANIFESTS.rglob("*"):
        if path.is_file():
            assert not re.search(r"(AKIA|ASIA)[0-9A-Z]{16}", path.read_text()), path


@needs_kubectl
def test_kfp_launcher_points_at_seaweedfs_with_the_secret_keys(rendered):
    launcher = find(rendered, "ConfigMap", "kfp-launcher", "kubeflow")
    assert launcher["data"]["defaultPipelineRoot"] == "s3://mlpipeline/simclrv2/pipeline-root"
    s3 = yaml.safe_load(launcher["data"]["providers"])["s3"]["default"]
    assert s3["endpoint"] == PROFILE["s3"]["endpoint_url"].removeprefix("http://")
    assert s3["disableSSL"] is True
    assert s3["region"]
    credentials = s3["credentials"]
    assert credentials["fromEnv"] is False
    secret = find(rendered, "Secret", credentials["secretRef"]["secretName"], "kubeflow")
    assert credentials["secretRef"]["accessKeyKey"] == PROFILE["s3"]["access_key_field"]
    assert credentials["secretRef"]["secretKeyKey"] == PROFILE["s3"]["secret_key_field"]
    assert set(secret["data"]) == {
        credentials["secretRef"]["accessKeyKey"],
        credentials["secretRef"]["secretKeyKey"],
    }


@needs_kubectl
def test_pushgateway_is_pinned_non_root_probed_and_served_where_the_profile_pushes(rendered):
    deployment = find(rendered, "Deployment", "pushgateway", "simclrv2")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert re.fullmatch(r"prom/pushgateway:v1\.11\.\d+", container["image"])
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert any(port["containerPort"] == 9091 for port in container["ports"])

    # PUSHGATEWAY_URL in the profile resolves to this Service: <name>.<namespace>:<port>.
    host, port = PROFILE["pushgateway_url"].removeprefix("http://").split(":")
    name, namespace = host.split(".")
    service = find(rendered, "Service", name, namespace)
    assert [p["port"] for p in service["spec"]["ports"]] == [int(port)]
    selector = service["spec"]["selector"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


@needs_kubectl
def test_prometheus_scrape_config_honors_pushed_labels(rendered):
    config = find(rendered, "ConfigMap", "pushgateway-scrape-config", "simclrv2")
    (text,) = config["data"].values()
    (job,) = yaml.safe_load(text)["scrape_configs"]
    assert job["honor_labels"] is True
    (targets,) = job["static_configs"]
    assert all(t.startswith("pushgateway.simclrv2") for t in targets["targets"])


RUNNER = "simclrv2-pipeline-runner"
RUNNER_RBAC = OVERLAY / "pipeline-runner-rbac.yaml"
# Everything the runner may do, (apiGroup, resource, resourceNames) -> verbs; each rule is
# justified in pipeline-runner-rbac.yaml. Exact: a verb more or less fails the tests below.
RUNNER_ROLE_GRANTS = {
    # KFP launcher: the S3 secret and its settings, by name; Argo's step results.
    ("", "secrets", (PROFILE["s3"]["secret"],)): {"get"},
    ("", "configmaps", ("kfp-launcher",)): {"get"},
    ("argoproj.io", "workflowtaskresults", ()): {"create", "patch"},
    # Multi-node launcher (manifests/trainer): its TrainJob, node 0's pod and log, events.
    ("trainer.kubeflow.org", "trainjobs", ()): {
        "create", "get", "list", "watch", "patch", "delete"
    },
    ("", "pods", ()): {"get", "list", "watch"},
    ("", "pods/log", ()): {"get"},
    ("", "events", ()): {"get", "list", "watch"},
}  # fmt: skip
RUNNER_CLUSTER_GRANTS = {
    ("trainer.kubeflow.org", "clustertrainingruntimes", ()): {"get", "list", "watch"},
}


def _grants(rules: list[dict]) -> dict[tuple, set[str]]:
    """RBAC rules -> {(apiGroup, resource, resourceNames): verbs}, one key per group and
    resource a rule names; wildcards and non-resource URLs are refused outright."""
    grants: dict[tuple, set[str]] = {}
    for rule in rules:
        assert "nonResourceURLs" not in rule, rule
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), rule
        names = tuple(sorted(rule.get("resourceNames", [])))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource, names), set()).update(rule["verbs"])
    return grants


def _runner_rbac() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(RUNNER_RBAC.read_text()) if doc]


def test_runner_role_grants_exactly_the_listed_verbs():
    role = find(_runner_rbac(), "Role", RUNNER, "kubeflow")
    assert _grants(role["rules"]) == RUNNER_ROLE_GRANTS


def test_runner_cluster_role_only_reads_cluster_training_runtimes():
    cluster_role = find(_runner_rbac(), "ClusterRole", RUNNER)
    assert _grants(cluster_role["rules"]) == RUNNER_CLUSTER_GRANTS


@pytest.mark.parametrize("kind", ["Role", "ClusterRole"])
def test_runner_rbac_comparison_notices_a_missing_verb(kind):
    """The exact comparison above fails when any one verb of any rule is removed."""
    rbac = _runner_rbac()
    role = find(rbac, kind, RUNNER, "kubeflow" if kind == "Role" else None)
    expected = RUNNER_ROLE_GRANTS if kind == "Role" else RUNNER_CLUSTER_GRANTS
    checked = 0
    for index, rule in enumerate(role["rules"]):
        for verb in rule["verbs"]:
            rules = copy.deepcopy(role["rules"])
            rules[index]["verbs"].remove(verb)
            assert _grants(rules) != expected, (rule, verb)
            checked += 1
    assert checked == sum(len(verbs) for verbs in expected.values())


@needs_kubectl
def test_runner_role_is_minimal_and_bound_to_the_service_account(rendered):
    role = find(rendered, "Role", RUNNER, "kubeflow")
    assert _grants(role["rules"]) == RUNNER_ROLE_GRANTS
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert len(secret_rules) == 1
    # Core-group objects are named, except those the multi-node launcher finds by label
    # (node pods, their logs and events), which it only reads.
    for rule in role["rules"]:
        if rule["apiGroups"] == [""] and "resourceNames" not in rule:
            assert set(rule["resources"]) <= {"pods", "pods/log", "events"}, rule
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule

    subjects = [{"kind": "ServiceAccount", "name": RUNNER, "namespace": "kubeflow"}]
    binding = find(rendered, "RoleBinding", RUNNER, "kubeflow")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": RUNNER,
    }
    assert binding["subjects"] == subjects

    cluster_role = find(rendered, "ClusterRole", RUNNER)
    assert _grants(cluster_role["rules"]) == RUNNER_CLUSTER_GRANTS
    cluster_binding = find(rendered, "ClusterRoleBinding", RUNNER)
    assert cluster_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": RUNNER,
    }
    assert cluster_binding["subjects"] == subjects


@needs_kubectl
def test_network_policy_lets_kubeflow_reach_the_pushgateway_port(rendered):
    policy = find(rendered, "NetworkPolicy", "pushgateway-ingress", "simclrv2")
    deployment = find(rendered, "Deployment", "pushgateway", "simclrv2")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert {"kubernetes.io/metadata.name": "kubeflow"} in [
        peer["namespaceSelector"]["matchLabels"]
        for peer in rule["from"]
        if "namespaceSelector" in peer
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9091}]


@needs_kubectl
def test_every_rendered_document_validates_against_kubernetes_schemas(rendered):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in rendered:
        # strict: unknown fields (typos such as `readinessprobe`) fail too.
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kind_cluster_has_one_control_plane_and_one_cpu_worker():
    config = yaml.safe_load((MANIFESTS / "kind" / "cluster.yaml").read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [node["role"] for node in config["nodes"]] == ["control-plane", "worker"]
    assert not any("nvidia.com/gpu.product" in n.get("labels", {}) for n in config["nodes"])


def test_kind_gpu_cluster_worker_is_labelled_and_tainted_like_the_gpu_profiles():
    config = yaml.safe_load((MANIFESTS / "kind" / "cluster-gpu.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [node["role"] for node in config["nodes"]] == ["control-plane", "worker"]
    worker = config["nodes"][1]

    gpu_profile = yaml.safe_load(
        (ROOT / "pipelines" / "profiles" / "imagenet-r50.yaml").read_text()
    )
    gpu_steps = [s for s in gpu_profile["steps"].values() if s.get("gpus", 0) > 0]
    assert gpu_steps
    for step in gpu_steps:
        assert step.get("node_selector", {}).items() <= worker["labels"].items()
    # The label `simclrv2 pipeline compile --gpu-product` selects on, to try a pinned model.
    assert worker["labels"]["nvidia.com/gpu.product"]

    (patch,) = worker["kubeadmConfigPatches"]
    join = yaml.safe_load(patch)
    assert join["kind"] == "JoinConfiguration"
    taints = join["nodeRegistration"]["taints"]
    for step in gpu_steps:
        for toleration in step["tolerations"]:
            assert any(
                t["key"] == toleration["key"] and t["effect"] == toleration["effect"]
                for t in taints
            ), (toleration, taints)


def test_kfp_install_pins_both_remote_bases_to_2_17_0():
    kustomization = yaml.safe_load((MANIFESTS / "kfp" / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    prefix = "github.com/kubeflow/pipelines/manifests/kustomize/"
    assert sorted(kustomization["resources"]) == sorted(
        [
            f"{prefix}cluster-scoped-resources?ref=2.17.0",
            f"{prefix}env/platform-agnostic?ref=2.17.0",
        ]
    )


KFP_CONFIGMAP_STANDIN = (
    ROOT / "tests" / "fixtures" / "kfp-2.17.0-workflow-controller-configmap.yaml"
)
RETRY_DEFAULTS = MANIFESTS / "kfp" / "workflow-controller-retry-defaults.yaml"


def _workflow_controller_configmap(docs):
    return find(docs, "ConfigMap", "workflow-controller-configmap", "kubeflow")


@pytest.fixture(scope="module")
def kfp_rendered(tmp_path_factory):
    """manifests/kfp rendered from a temporary copy whose remote bases (github.com) are
    replaced by a local stand-in of KFP 2.17.0's workflow-controller-configmap."""
    copy = tmp_path_factory.mktemp("kfp") / "kfp"
    shutil.copytree(MANIFESTS / "kfp", copy)
    shutil.copy(KFP_CONFIGMAP_STANDIN, copy / "kfp-standin.yaml")
    kustomization = yaml.safe_load((copy / "kustomization.yaml").read_text())
    assert all(r.startswith("github.com/") for r in kustomization["resources"])
    kustomization["resources"] = ["kfp-standin.yaml"]
    (copy / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = subprocess.run(
        [KUBECTL, "kustomize", str(copy)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _assert_only_the_default_retry_policy_is_gone(patched: dict) -> None:
    original = _workflow_controller_configmap(
        list(yaml.safe_load_all(KFP_CONFIGMAP_STANDIN.read_text()))
    )
    assert set(patched["data"]) == set(original["data"])
    for key in ("artifactRepository", "executor"):
        assert patched["data"][key] == original["data"][key], key
    before = yaml.safe_load(original["data"]["workflowDefaults"])["spec"]
    after = yaml.safe_load(patched["data"]["workflowDefaults"])["spec"]
    assert before["templateDefaults"]["retryStrategy"]["retryPolicy"] == "OnError"  # KFP's
    assert after["ttlStrategy"] == before["ttlStrategy"]
    assert "retryStrategy" not in after.get("templateDefaults", {})
    # Nothing else either: no OnFailure/Always default, which would reach KFP's DAG templates.
    assert after == {"ttlStrategy": before["ttlStrategy"]}


def test_kfp_install_patches_argo_defaults_with_the_retry_defaults_file():
    kustomization = yaml.safe_load((MANIFESTS / "kfp" / "kustomization.yaml").read_text())
    assert kustomization["patches"] == [{"path": RETRY_DEFAULTS.name}]
    patch = yaml.safe_load(RETRY_DEFAULTS.read_text())
    assert (patch["kind"], patch["metadata"]) == (
        "ConfigMap", {"name": "workflow-controller-configmap", "namespace": "kubeflow"}
    )  # fmt: skip
    assert set(patch["data"]) == {"workflowDefaults"}  # replaces that key only


@needs_kubectl
def test_kfp_install_drops_argos_default_retry_policy_and_keeps_the_rest(kfp_rendered):
    (configmap,) = kfp_rendered
    _assert_only_the_default_retry_policy_is_gone(configmap)


@needs_kubectl
def test_retry_defaults_file_also_patches_an_installed_cluster():
    """What manifests/README.md tells users of a running KFP: kubectl patch --type merge
    --patch-file (here --local, on the stand-in)."""
    result = subprocess.run(
        [KUBECTL, "patch", "--local", "-f", str(KFP_CONFIGMAP_STANDIN), "--type", "merge",
         "--patch-file", str(RETRY_DEFAULTS), "-o", "yaml"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    _assert_only_the_default_retry_policy_is_gone(yaml.safe_load(result.stdout))
    readme = (MANIFESTS / "README.md").read_text()
    assert (
        "kubectl -n kubeflow patch configmap workflow-controller-configmap --type merge "
        "--patch-file manifests/kfp/workflow-controller-retry-defaults.yaml"
    ) in readme


def test_run_local_applies_manifests_kfp_and_the_retry_defaults():
    """So the patch reaches kind clusters: a fresh install applies manifests/kfp; a cluster
    installed before the patch existed gets it with kubectl patch."""
    script = (ROOT / "scripts" / "run-local.sh").read_text()
    assert re.search(r"^\s*k apply -k manifests/kfp$", script, re.MULTILINE)
    assert re.search(
        r"k -n kubeflow patch configmap workflow-controller-configmap --type merge \\\n"
        r"\s*--patch-file manifests/kfp/workflow-controller-retry-defaults\.yaml",
        script,
    )


# --- Kubeflow Trainer (multi-node steps) -------------------------------------------------------

TRAINER = MANIFESTS / "trainer"
TRAINER_VERSION = "v2.3.0"
RUNTIME_FILE = TRAINER / "simclrv2-torch-runtime.yaml"
TRAINER_REPO = "github.com/kubeflow/trainer/manifests/"


def _runtime() -> dict:
    (runtime,) = [doc for doc in yaml.safe_load_all(RUNTIME_FILE.read_text()) if doc]
    return runtime


def _without_none(value):
    """`value` with every None-valued mapping entry removed, recursively (what the API models'
    to_dict() leaves out)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _differences(expected, actual, path: str = "") -> list[str]:
    """Where `actual` differs from `expected`: missing or extra keys (a field the model does not
    know is dropped by from_dict(), e.g. a misspelt one), list lengths, values."""
    expected, actual = _without_none(expected), _without_none(actual)
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = [f"{path}.{key}: dropped" for key in expected.keys() - actual.keys()]
        found += [f"{path}.{key}: added" for key in actual.keys() - expected.keys()]
        for key in expected.keys() & actual.keys():
            found += _differences(expected[key], actual[key], f"{path}.{key}")
        return sorted(found)
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(expected)} items became {len(actual)}"]
        found = []
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            found += _differences(e, a, f"{path}[{index}]")
        return found
    if type(expected) is not type(actual) or expected != actual:
        return [f"{path}: {expected!r} became {actual!r}"]
    return []


def _through_trainer_models(runtime: dict) -> dict:
    from kubeflow_trainer_api.models.trainer_v1alpha1_cluster_training_runtime import (
        TrainerV1alpha1ClusterTrainingRuntime,
    )

    return TrainerV1alpha1ClusterTrainingRuntime.from_dict(copy.deepcopy(runtime)).to_dict()


def _node_job(runtime: dict) -> dict:
    (replicated_job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    return replicated_job


def test_runtime_round_trips_through_the_trainer_api_models_unchanged():
    pytest.importorskip("kubeflow_trainer_api")
    runtime = _runtime()
    assert _differences(runtime, _through_trainer_models(runtime)) == []


_JOBSET = ("spec", "template", "spec")
_POD = (*_JOBSET, "replicatedJobs", 0, "template", "spec", "template", "spec")
# (where, right name, misspelt name) in the runtime, from the JobSet down to the container.
MISSPELT_FIELDS = [
    (("spec",), "mlPolicy", "mlpolicy"),
    (_JOBSET, "failurePolicy", "failurPolicy"),
    ((*_JOBSET, "replicatedJobs", 0, "template", "spec"), "backoffLimit", "backofLimit"),
    (_POD, "restartPolicy", "restartpolicy"),
    ((*_POD, "containers", 0, "securityContext"), "allowPrivilegeEscalation", "allowPrivEsc"),
]


@pytest.mark.parametrize(
    ("path", "right", "wrong"), MISSPELT_FIELDS, ids=[wrong for *_, wrong in MISSPELT_FIELDS]
)
def test_runtime_round_trip_comparison_catches_a_misspelt_field(path, right, wrong):
    """The round trip is a schema check: the models drop a field they do not know, and the
    comparison reports it (a misspelt field would otherwise be silently ignored by Trainer's
    API server too, which prunes unknown fields)."""
    pytest.importorskip("kubeflow_trainer_api")
    runtime = _runtime()
    parent = runtime
    for key in path:
        parent = parent[key]
    parent[wrong] = parent.pop(right)

    differences = _differences(runtime, _through_trainer_models(runtime))

    assert differences, f"{wrong} went unnoticed"
    assert any(f".{wrong}: dropped" in d for d in differences), differences


def test_runtime_node_job_template_validates_against_kubernetes_schemas():
    """kubernetes-validate has no schema for Trainer's CRDs (SchemaNotFoundError), so the
    replicated job's Job template is validated as a batch/v1 Job; the rest of the runtime by
    the round trip above."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    runtime = _runtime()
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(runtime, KUBERNETES_VERSION, strict=True)
    template = _node_job(runtime)["template"]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "node", **template["metadata"]},
        "spec": template["spec"],
    }
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_runtime_is_the_torch_runtime_our_launcher_and_trainers_torch_plugin_expect():
    runtime = _runtime()
    assert runtime["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert runtime["kind"] == "ClusterTrainingRuntime"
    assert runtime["metadata"]["name"] == "simclrv2-torch"
    assert "namespace" not in runtime["metadata"]  # cluster-scoped
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "torch"
    assert runtime["spec"]["mlPolicy"] == {"numNodes": 1, "torch": {}}

    jobset = runtime["spec"]["template"]["spec"]
    # No elastic mode: JobSet restarts every node, which resume from the newest checkpoint.
    restarts = jobset["failurePolicy"]["maxRestarts"]
    assert isinstance(restarts, int) and restarts >= 1

    # Trainer v2.3.0 (pkg/constants: Node = "node"): the torch plugin sets PET_* on the
    # container `node` of the replicated job `node`; its webhook wants replicas 1 there.
    replicated_job = _node_job(runtime)
    assert replicated_job["name"] == "node"
    assert replicated_job.get("replicas", 1) == 1
    template = replicated_job["template"]
    assert template["metadata"]["labels"] == {
        "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"
    }
    assert template["spec"]["backoffLimit"] == 0  # a failed node goes to the JobSet policy
    pod = template["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["name"] == "node"
    gpu_profile = yaml.safe_load(
        (ROOT / "pipelines" / "profiles" / "imagenet-r50.yaml").read_text()
    )
    assert container["image"] == gpu_profile["image"]  # a default; each TrainJob sets its own

    # Non-root as the image's user (images/Dockerfile: USER <uid>, group 0).
    (uid,) = re.findall(r"^USER (\d+)$", (ROOT / "images" / "Dockerfile").read_text(), re.M)
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": int(uid), "runAsGroup": 0}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    # /dev/shm in memory, under the name the launcher's patch merges its sizeLimit into.
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    (dshm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert dshm["emptyDir"]["medium"] == "Memory"


def test_trainer_install_pins_v2_3_0_like_the_trainer_api_models():
    text = (TRAINER / "kustomization.yaml").read_text()
    kustomization = yaml.safe_load(text)
    assert kustomization["kind"] == "Kustomization"
    # Trainer's manager overlay: CRDs, controller, webhooks and JobSet.
    assert kustomization["resources"] == [f"{TRAINER_REPO}overlays/manager?ref={TRAINER_VERSION}"]
    # Every ref, comments included (the install instructions), names the same version.
    refs = re.findall(r"[?&]ref=([\w.-]+)", text)
    assert refs and set(refs) == {TRAINER_VERSION}, refs
    # The test models are of that version, and pyproject pins them so.
    assert importlib.metadata.version("kubeflow-trainer-api") == TRAINER_VERSION.removeprefix("v")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.findall(r'"kubeflow-trainer-api==([^"]+)"', pyproject) == [
        TRAINER_VERSION.removeprefix("v")
    ]


@needs_kubectl
def test_trainer_kustomization_renders_with_a_local_stand_in(tmp_path):
    """manifests/trainer has only its remote base; with a local stand-in for it, `kubectl
    kustomize` accepts the file (a misspelt kustomization field fails here)."""
    copy_dir = tmp_path / "trainer"
    shutil.copytree(TRAINER, copy_dir)
    kustomization = yaml.safe_load((copy_dir / "kustomization.yaml").read_text())
    assert all(r.startswith(TRAINER_REPO) for r in kustomization["resources"])
    kustomization["resources"] = ["standin.yaml"]
    (copy_dir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    standin = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow-system"}}
    (copy_dir / "standin.yaml").write_text(yaml.safe_dump(standin))
    result = subprocess.run(
        [KUBECTL, "kustomize", str(copy_dir)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert [doc for doc in yaml.safe_load_all(result.stdout) if doc] == [standin]
