#!/usr/bin/env bash
# `make run-local`: the pipeline profile $PROFILE on a local kind cluster running Kubeflow
# Pipelines standalone $KFP_VERSION, end to end. manifests/README.md ("make run-local, step by
# step") lists what it does. Every step looks at the cluster first and skips what is done
# ("already ..."), so running it again resumes or repeats cheaply.
#
# Environment (defaults in brackets):
#   CLUSTER [simclrv2]   KIND_CONFIG [manifests/kind/cluster.yaml]   IMAGE [simclrv2:0.1.0-cpu]
#   PROFILE [tiny]       KFP_VERSION [2.17.0]   KFP_PORT [8888]   S3_PORT [8333]
#   DOCKER [docker]      VENV [.venv]   WAIT_TIMEOUT [20m]   RUN_TIMEOUT [10800] (seconds)
#   SERVICE_ACCOUNT [empty: KFP's pipeline-runner]
#   TRAINER [empty; 1: also install Kubeflow Trainer v2.3.0 and our runtime, for profiles with
#           multi-node steps (`steps.<step>.nodes` > 1): TRAINER=1 make run-local]
#
# kubectl is always called with --context kind-$CLUSTER: the user's current context is never
# used, and is put back if `kind create cluster` switched it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER=${CLUSTER:-simclrv2}
KIND_CONFIG=${KIND_CONFIG:-manifests/kind/cluster.yaml}
IMAGE=${IMAGE:-simclrv2:0.1.0-cpu}
PROFILE=${PROFILE:-tiny}
KFP_VERSION=${KFP_VERSION:-2.17.0}
KFP_PORT=${KFP_PORT:-8888}
S3_PORT=${S3_PORT:-8333}
DOCKER=${DOCKER:-docker}
VENV=${VENV:-.venv}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-20m}
RUN_TIMEOUT=${RUN_TIMEOUT:-10800}
# Empty: KFP's own pipeline-runner. simclrv2-pipeline-runner (manifests/overlays/simclrv2) is
# the least-privilege account; not yet verified on a real cluster, so it is opt-in.
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-}
TRAINER=${TRAINER:-}

CONTEXT=kind-$CLUSTER
OVERLAY=manifests/overlays/simclrv2
ENV_FILE=$OVERLAY/s3-credentials.env
KFP_SECRET=mlpipeline-minio-artifact
PROFILE_FILE=pipelines/profiles/$PROFILE.yaml
COMPILED=pipelines/compiled/$PROFILE.yaml
PIPELINE_NAME=simclrv2-$PROFILE
KFP_REPO=github.com/kubeflow/pipelines/manifests/kustomize
# Set on namespace kubeflow once both KFP applies succeeded: the "KFP is installed" marker.
INSTALLED_LABEL=simclrv2.io/kfp-installed
# Kubeflow Trainer (TRAINER=1): manifests/trainer pins this version; its marker label goes on
# its namespace once the install applied and its CRDs are established.
TRAINER_VERSION=v2.3.0
TRAINER_NAMESPACE=kubeflow-system
TRAINER_RUNTIME=manifests/trainer/simclrv2-torch-runtime.yaml
TRAINER_LABEL=simclrv2.io/trainer-installed

log() { echo "[run-local] $*"; }
die() {
    local line
    for line in "$@"; do echo "[run-local] ERROR: $line" >&2; done
    exit 1
}
k() { kubectl --context "$CONTEXT" "$@"; }

# --- 0. tools and settings, all checked before anything is done ------------------------------
missing=()
command -v kind >/dev/null 2>&1 || missing+=(
    "kind not found on PATH. Install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation),"
    "  e.g. 'go install sigs.k8s.io/kind@latest', 'brew install kind', or its release binary."
)
command -v kubectl >/dev/null 2>&1 || missing+=(
    "kubectl not found on PATH. Install kubectl 1.32 (https://kubernetes.io/docs/tasks/tools/);"
    "  its built-in kustomize renders the manifests."
)
command -v "$DOCKER" >/dev/null 2>&1 || missing+=(
    "$DOCKER (the docker client, DOCKER=$DOCKER) not found on PATH. Install Docker"
    "  (https://docs.docker.com/engine/install/, or 'apt-get install docker.io' on Debian/Ubuntu)."
)
# (${array[@]+...}: macOS's bash 3.2 calls an empty array unbound under set -u.)
[[ -z ${missing[*]+set} ]] || die "${missing[@]}"

# The engine, only once every client is there (so a missing tool fails before any call).
if ! engine_error=$("$DOCKER" info 2>&1 >/dev/null); then
    die "the docker engine does not answer ('$DOCKER info' failed: ${engine_error##*$'\n'})." \
        "Start it ('sudo systemctl start docker', or Docker Desktop) and make sure your user" \
        "may use it (the docker group); kind runs its nodes as containers of this engine."
fi

[[ -x $VENV/bin/simclrv2 && -x $VENV/bin/python ]] ||
    die "no project venv at $VENV (no $VENV/bin/simclrv2): run 'make install' first."
[[ -f $KIND_CONFIG ]] || die "kind config $KIND_CONFIG not found (KIND_CONFIG)."
[[ -f $PROFILE_FILE ]] || die "profile $PROFILE_FILE not found (PROFILE=$PROFILE)."
kfp_refs=$(grep -o '?ref=[0-9A-Za-z._-]*' manifests/kfp/kustomization.yaml | sort -u)
[[ $kfp_refs == "?ref=$KFP_VERSION" ]] ||
    die "manifests/kfp/kustomization.yaml does not pin KFP $KFP_VERSION (KFP_VERSION) alone:" \
        "both install steps must use the same version; edit its ?ref= or unset KFP_VERSION."
case $TRAINER in
    "" | 0) TRAINER= ;;
    1)
        trainer_refs=$(grep -o '?ref=[0-9A-Za-z._-]*' manifests/trainer/kustomization.yaml | sort -u)
        [[ $trainer_refs == "?ref=$TRAINER_VERSION" ]] ||
            die "manifests/trainer/kustomization.yaml does not pin Kubeflow Trainer $TRAINER_VERSION" \
                "alone (the runtime and kubeflow-trainer-api==${TRAINER_VERSION#v} are for it)."
        [[ -f $TRAINER_RUNTIME ]] || die "$TRAINER_RUNTIME not found."
        ;;
    *) die "TRAINER=$TRAINER: set TRAINER=1 to also install Kubeflow Trainer, or leave it unset." ;;
esac
[[ $KFP_PORT =~ ^[0-9]+$ && $S3_PORT =~ ^[0-9]+$ ]] ||
    die "KFP_PORT and S3_PORT must be port numbers."

port_is_free() {
    "$VENV/bin/python" - "$1" <<'PY'
import socket
import sys

with socket.socket() as probe:
    try:
        probe.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        sys.exit(1)
PY
}
for port in "$KFP_PORT" "$S3_PORT"; do
    port_is_free "$port" ||
        die "port $port is in use on this machine: pick another one (KFP_PORT / S3_PORT)."
done

# The profile's image is what the run's pods use: loading another one would be pointless.
# Its work_root is where the evaluate step writes metrics.json (read at the end).
profile_fields=$("$VENV/bin/python" - "$PROFILE_FILE" <<'PY'
import sys

import yaml

profile = yaml.safe_load(open(sys.argv[1]))
print(profile["image"])
print(profile["work_root"])
steps = profile.get("steps", {})
print(" ".join(s for s, v in steps.items() if s != "default" and int(v.get("nodes", 1)) > 1))
PY
)
{ read -r profile_image; read -r work_root; read -r multinode_steps || true; } <<<"$profile_fields"
if [[ -n $multinode_steps ]]; then
    [[ $TRAINER == 1 ]] ||
        die "$PROFILE_FILE runs $multinode_steps on several nodes, as Kubeflow Trainer TrainJobs:" \
            "set TRAINER=1 to install Trainer too (TRAINER=1 PROFILE=$PROFILE make run-local)."
    # The launcher creates and watches TrainJobs: KFP's default runner may not.
    SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-simclrv2-pipeline-runner}
fi
[[ $profile_image == "$IMAGE" ]] ||
    die "$PROFILE_FILE runs image $profile_image but IMAGE=$IMAGE: the run would not use the" \
        "image loaded into kind. Set IMAGE=$profile_image or change the profile."

TMP=$(mktemp -d)
forwarders=()
cleanup() {
    local pid
    for pid in ${forwarders[@]+"${forwarders[@]}"}; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

# --- 1. kind cluster --------------------------------------------------------------------------
previous_context=$(kubectl config current-context 2>/dev/null || true)
keep_users_context() {
    # kind create cluster / kind export kubeconfig make kind-$CLUSTER the current context.
    if [[ -n $previous_context && $previous_context != "$CONTEXT" ]]; then
        kubectl config use-context "$previous_context" >/dev/null
        log "kept your current kubectl context $previous_context (this script uses --context $CONTEXT)"
    fi
}
if kind get clusters 2>/dev/null | grep -qx -- "$CLUSTER"; then
    log "1. kind cluster $CLUSTER already exists (make clean-local deletes it, to recreate it from $KIND_CONFIG)"
else
    log "1. creating kind cluster $CLUSTER from $KIND_CONFIG (a few minutes the first time)"
    kind create cluster --name "$CLUSTER" --config "$KIND_CONFIG" --wait 5m
    keep_users_context
fi
if ! kubectl config get-contexts -o name | grep -qx -- "$CONTEXT"; then
    log "   kubeconfig has no context $CONTEXT: exporting it from kind"
    kind export kubeconfig --name "$CLUSTER"
    keep_users_context
fi
k cluster-info >/dev/null || die "cluster $CLUSTER does not answer (kubectl --context $CONTEXT cluster-info)."

# --- 2. Kubeflow Pipelines standalone ---------------------------------------------------------
installed=$(k get namespace kubeflow -o "jsonpath={.metadata.labels.simclrv2\.io/kfp-installed}" 2>/dev/null || true)
if [[ $installed == "$KFP_VERSION" ]]; then
    log "2. Kubeflow Pipelines $KFP_VERSION already installed (namespace kubeflow has $INSTALLED_LABEL=$KFP_VERSION)"
    # manifests/kfp patches Argo's defaults; a cluster installed before that patch existed
    # gets it here ("patched (no change)" when it has it already).
    k -n kubeflow patch configmap workflow-controller-configmap --type merge \
        --patch-file manifests/kfp/workflow-controller-retry-defaults.yaml
else
    log "2. installing Kubeflow Pipelines $KFP_VERSION standalone (manifests fetched from github.com)"
    # The CRDs first: the namespaced resources include objects of those kinds (Application,
    # ...). Plain client-side apply, as KFP's install instructions do: KFP ships Argo's
    # "minimal" CRDs, small enough for the last-applied annotation (no --server-side needed).
    k apply -k "$KFP_REPO/cluster-scoped-resources?ref=$KFP_VERSION"
    log "   waiting for CRD applications.app.k8s.io to be established"
    k wait --for condition=established --timeout=120s crd/applications.app.k8s.io
    k apply -k manifests/kfp
    k label namespace kubeflow "$INSTALLED_LABEL=$KFP_VERSION" --overwrite >/dev/null
fi

# --- 3. our overlay ---------------------------------------------------------------------------
if [[ -f $ENV_FILE ]]; then
    log "3. $ENV_FILE already exists: using it"
    if grep -q REPLACE_ME "$ENV_FILE"; then
        die "$ENV_FILE still holds the placeholders of the .example. Delete it: this script" \
            "then fills it from KFP's own secret $KFP_SECRET (the keys its SeaweedFS accepts)."
    fi
else
    log "3. creating $ENV_FILE (mode 600) from KFP's secret kubeflow/$KFP_SECRET, so that"
    log "   applying the overlay keeps the keys KFP's SeaweedFS accepts"
    for _ in $(seq 60); do
        k get secret "$KFP_SECRET" -n kubeflow >/dev/null 2>&1 && break
        sleep 2
    done
    k get secret "$KFP_SECRET" -n kubeflow >/dev/null ||
        die "secret kubeflow/$KFP_SECRET did not appear within 2 minutes."
    # The values go from kubectl (decoded by its go-template base64decode) into the file only,
    # never to the terminal; printf is a builtin, so they are no process's arguments either.
    # Written in the private temp folder first: the repository never holds a partial file.
    access_key=$(k get secret "$KFP_SECRET" -n kubeflow -o 'go-template={{.data.accesskey | base64decode}}')
    secret_key=$(k get secret "$KFP_SECRET" -n kubeflow -o 'go-template={{.data.secretkey | base64decode}}')
    [[ -n $access_key && -n $secret_key ]] ||
        die "secret kubeflow/$KFP_SECRET lacks the keys accesskey/secretkey."
    (
        umask 077
        printf 'accesskey=%s\nsecretkey=%s\n' "$access_key" "$secret_key" >"$TMP/s3-credentials.env"
    )
    chmod 600 "$TMP/s3-credentials.env"
    mv "$TMP/s3-credentials.env" "$ENV_FILE"
    unset access_key secret_key
fi
log "   applying $OVERLAY (kubectl apply is idempotent: 'unchanged' when already applied)"
k apply -k "$OVERLAY"

# --- 4. wait until ready ----------------------------------------------------------------------
log "4. waiting (up to $WAIT_TIMEOUT) for these deployments to be Available; the first time, the"
log "   nodes pull every KFP image, which takes several minutes:"
k get deployments -n kubeflow -o name | sed 's|^deployment.apps/|     kubeflow/|'
log "     simclrv2/pushgateway"
k wait --for=condition=Available deployment --all -n kubeflow --timeout="$WAIT_TIMEOUT"
k wait --for=condition=Available deployment/pushgateway -n simclrv2 --timeout="$WAIT_TIMEOUT"

# --- 4b. Kubeflow Trainer, only with TRAINER=1 (multi-node steps) -----------------------------
if [[ $TRAINER == 1 ]]; then
    trainer_installed=$(k get namespace "$TRAINER_NAMESPACE" \
        -o "jsonpath={.metadata.labels.simclrv2\.io/trainer-installed}" 2>/dev/null || true)
    if [[ $trainer_installed == "$TRAINER_VERSION" ]]; then
        log "4b. Kubeflow Trainer $TRAINER_VERSION already installed (namespace $TRAINER_NAMESPACE has $TRAINER_LABEL=$TRAINER_VERSION)"
    else
        log "4b. installing Kubeflow Trainer $TRAINER_VERSION with JobSet (manifests/trainer, fetched from github.com)"
        # Server-side, as Trainer's install instructions: its CRDs are too large for the
        # last-applied annotation of a client-side apply.
        k apply --server-side -k manifests/trainer
        log "   waiting for the Trainer CRDs to be established"
        k wait --for condition=established --timeout=120s \
            crd/trainjobs.trainer.kubeflow.org crd/clustertrainingruntimes.trainer.kubeflow.org
        k label namespace "$TRAINER_NAMESPACE" "$TRAINER_LABEL=$TRAINER_VERSION" --overwrite >/dev/null
    fi
    # Every time: the runtime's validating webhook is served by the Trainer controller, and
    # TrainJobs need JobSet's controller.
    log "   waiting (up to $WAIT_TIMEOUT) for the Trainer and JobSet controllers to be Available"
    k wait --for=condition=Available -n "$TRAINER_NAMESPACE" --timeout="$WAIT_TIMEOUT" \
        deployment/kubeflow-trainer-controller-manager deployment/jobset-controller-manager
    # Its image (simclrv2:0.1.0-gpu) is only a default: the multi-node launcher sets each
    # TrainJob's trainer.image to the profile's image, the one step 5 loads into kind.
    log "   applying $TRAINER_RUNTIME (ClusterTrainingRuntime simclrv2-torch)"
    for attempt in 1 2 3 4 5 6; do
        k apply -f "$TRAINER_RUNTIME" && break
        ((attempt < 6)) || die "applying $TRAINER_RUNTIME failed (above)."
        log "   the Trainer webhook may not serve yet: trying again in 10 s"
        sleep 10
    done
fi

# --- 5. the image, in the nodes ---------------------------------------------------------------
if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
    log "5. image $IMAGE already built"
else
    # The Makefile's IMAGE is the repository and TAG the version: build.sh tags IMAGE:TAG-cpu.
    [[ $IMAGE == *:*-cpu && ${IMAGE##*:} != */* ]] ||
        die "image $IMAGE is missing and cannot be built by 'make images': it builds" \
            "<name>:<tag>-cpu. Build $IMAGE yourself, or use such a name."
    repository=${IMAGE%:*}
    tag=${IMAGE##*:}
    tag=${tag%-cpu}
    log "5. building $IMAGE: make images IMAGE_TARGETS=cpu IMAGE=$repository TAG=$tag"
    make images IMAGE_TARGETS=cpu IMAGE="$repository" TAG="$tag"
fi
# With TRAINER=1 the TrainJobs' node pods run this image too (the launcher sets it per
# TrainJob; the tag is not :latest, so IfNotPresent finds it loaded).
# Always load: kind itself compares image IDs and skips the copy when every node already has
# this exact image ("found to be already present on all nodes"), and a rebuilt image with the
# same tag is copied again, which a name-only check (crictl images) would miss.
log "   loading $IMAGE into the nodes of $CLUSTER"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# --- 6. compile, upload, run ------------------------------------------------------------------
# Forward localhost:$2 to port $3 of svc/$1 in kubeflow, restarting kubectl port-forward
# whenever it exits (it does when the pod behind the service restarts): a run can take an hour.
forward() {
    local service=$1 local_port=$2 remote_port=$3
    port_is_free "$local_port" ||
        die "port $local_port is in use on this machine: pick another one (KFP_PORT / S3_PORT)."
    (
        child=
        trap '[[ -n $child ]] && kill "$child" 2>/dev/null; exit 0' TERM
        while true; do
            kubectl --context "$CONTEXT" port-forward -n kubeflow "svc/$service" \
                "$local_port:$remote_port" >>"$TMP/port-forward-$service.log" 2>&1 &
            child=$!
            wait "$child" || true
            sleep 1
        done
    ) &
    forwarders+=("$!")
}

# Poll `command...` every second for up to 60 s; on timeout show the port-forward's log.
wait_for_forward() {  # service, what, command...
    local service=$1 what=$2
    shift 2
    local deadline=$((SECONDS + 60))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "[run-local] kubectl port-forward svc/$service said:" >&2
            tail -n 20 "$TMP/port-forward-$service.log" 2>/dev/null | uniq | tail -n 5 >&2 || true
            die "$what did not answer within 60 s."
        fi
        sleep 1
    done
}

http_ok() {
    "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$1"
}

tcp_ok() {
    "$VENV/bin/python" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5).close()' "$1"
}

log "6. compiling $PROFILE_FILE -> $COMPILED"
"$VENV/bin/simclrv2" pipeline compile "$PROFILE_FILE"

log "   port-forward svc/ml-pipeline -> http://localhost:$KFP_PORT (stopped when this script exits)"
forward ml-pipeline "$KFP_PORT" 8888
HOST=http://localhost:$KFP_PORT
wait_for_forward ml-pipeline "the KFP API server ($HOST/apis/v2beta1/healthz)" \
    http_ok "$HOST/apis/v2beta1/healthz"

# Version name from the compiled file's content: uploading the same package again is recognised
# ("exists already") and skipped, a changed one becomes a new version. (simclrv2's default
# name, <version>-<git sha>[-dirty], would refuse a second upload from the same dirty tree.)
version=$PROFILE-$("$VENV/bin/python" -c \
    'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:12])' \
    "$COMPILED")
log "   uploading $COMPILED as pipeline $PIPELINE_NAME, version $version"
run_version=(--version-name "$version")
if upload_output=$("$VENV/bin/simclrv2" pipeline upload --host "$HOST" --package "$COMPILED" \
    --pipeline-name "$PIPELINE_NAME" --version-name "$version" 2>&1); then
    printf '%s\n' "$upload_output"
    # A new pipeline's only version is the one the server names after the pipeline.
    [[ $upload_output != *"new pipeline"* ]] || run_version=()
elif [[ $upload_output == *"exists already"* ]]; then
    log "   already uploaded: $PIPELINE_NAME has version $version (this exact package)"
else
    printf '%s\n' "$upload_output" >&2
    die "uploading $COMPILED failed (above)."
fi

log "   starting a run of $PIPELINE_NAME in experiment $PIPELINE_NAME and waiting for it to end"
log "   (minutes to an hour on CPU; to watch it: kubectl --context $CONTEXT port-forward -n kubeflow svc/ml-pipeline-ui 8080:80,"
log "   then http://localhost:8080)"
account=()
[ -z "$SERVICE_ACCOUNT" ] || account=(--service-account "$SERVICE_ACCOUNT")
"$VENV/bin/simclrv2" pipeline run --host "$HOST" --pipeline-name "$PIPELINE_NAME" \
    ${run_version[@]+"${run_version[@]}"} ${account[@]+"${account[@]}"} \
    --experiment "$PIPELINE_NAME" --wait --timeout "$RUN_TIMEOUT" |
    tee "$TMP/run.log"
run_id=$(sed -n 's/^\[pipeline run\] run \([^ ]*\) .*/\1/p' "$TMP/run.log")

# --- 7. metrics -------------------------------------------------------------------------------
log "7. reading the run's metrics from SeaweedFS (port-forward svc/seaweedfs -> localhost:$S3_PORT)"
forward seaweedfs "$S3_PORT" 8333
wait_for_forward seaweedfs "SeaweedFS's S3 port (localhost:$S3_PORT)" tcp_ok "$S3_PORT"
env_value() { sed -n "s/^$1=//p" "$ENV_FILE" | head -n 1; }
(
    # In a subshell: the keys never reach the rest of the script, and are never printed.
    AWS_ACCESS_KEY_ID=$(env_value accesskey)
    AWS_SECRET_ACCESS_KEY=$(env_value secretkey)
    export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_ENDPOINT_URL=http://localhost:$S3_PORT
    unset AWS_ENDPOINT_URL_S3 AWS_PROFILE
    "$VENV/bin/python" - "$work_root" "$run_id" <<'PY'
import json
import sys

from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import split_s3_uri

work_root, run_id = sys.argv[1].rstrip("/"), sys.argv[2]
store = ObjectStore()
store.check_bucket(work_root)  # a clear error for refused keys or a missing bucket

# The run's folder is named by its KFP run id; else the newest evaluate/metrics.json.
uri = f"{work_root}/{run_id}/evaluate/metrics.json"
if not run_id or not store.exists(uri):
    found = [u for u, _ in store.list_files(work_root) if u.endswith("/evaluate/metrics.json")]
    if not found:
        sys.exit(f"[run-local] no evaluate/metrics.json under {work_root}")

    def modified(candidate):
        bucket, key = split_s3_uri(candidate)
        return store.client.head_object(Bucket=bucket, Key=key)["LastModified"]

    uri = max(found, key=modified)
metrics = json.loads(store.read_bytes(uri))
print(f"[run-local] test accuracy on {metrics.get('dataset', '?')} ({uri}):")
print(f"  {'model':<12} {'top-1':>7} {'top-5':>7}")
for name, result in metrics["models"].items():
    print(f"  {name:<12} {result['top1']:>7.2%} {result['top5']:>7.2%}")
PY
)

log "done. The Kubeflow Pipelines UI:"
log "  kubectl --context $CONTEXT port-forward -n kubeflow svc/ml-pipeline-ui 8080:80"
log "  then open http://localhost:8080 (runs are in experiment $PIPELINE_NAME)."
log "make clean-local deletes the cluster."
