"""The Kubernetes manifests under manifests/: our kustomize overlay rendered offline with
`kubectl kustomize` and every document validated against the Kubernetes 1.32 schemas, the kind
cluster configs, and the pin of the (remote, not rendered here) KFP 2.17.0 install."""

import base64
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


@needs_kubectl
def test_runner_role_is_minimal_and_bound_to_the_service_account(rendered):
    role = find(rendered, "Role", "simclrv2-pipeline-runner", "kubeflow")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"]
        assert "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
        assert set(rule["verbs"]) <= {"get", "create", "patch"}
        if rule["resources"] == ["secrets"]:
            assert rule["verbs"] == ["get"]
            assert rule["resourceNames"] == [PROFILE["s3"]["secret"]]
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert len(secret_rules) == 1
    assert all(
        "resourceNames" in r
        for r in role["rules"]
        if r["apiGroups"] == [""]  # every core-group rule names its objects
    )

    binding = find(rendered, "RoleBinding", "simclrv2-pipeline-runner", "kubeflow")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "simclrv2-pipeline-runner",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "simclrv2-pipeline-runner", "namespace": "kubeflow"}
    ]


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
