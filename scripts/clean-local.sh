#!/usr/bin/env bash
# `make clean-local`: delete the kind cluster `make run-local` made ($CLUSTER, default
# simclrv2), with everything in it (Kubeflow Pipelines, runs, SeaweedFS data). Leaves alone the
# docker images and manifests/overlays/simclrv2/s3-credentials.env.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER=${CLUSTER:-simclrv2}
IMAGE=${IMAGE:-simclrv2:0.1.0-cpu}
ENV_FILE=manifests/overlays/simclrv2/s3-credentials.env

log() { echo "[clean-local] $*"; }

if ! command -v kind >/dev/null 2>&1; then
    {
        log "ERROR: kind not found on PATH, so no kind cluster can be listed or deleted."
        log "Install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation),"
        log "e.g. 'go install sigs.k8s.io/kind@latest' or 'brew install kind'."
    } >&2
    exit 1
fi

if ! clusters=$(kind get clusters); then
    log "ERROR: 'kind get clusters' failed (is the docker engine running?)." >&2
    exit 1
fi
if grep -qx -- "$CLUSTER" <<<"$clusters"; then
    log "deleting kind cluster $CLUSTER (its kubectl context kind-$CLUSTER goes with it)"
    kind delete cluster --name "$CLUSTER"
else
    log "no kind cluster named $CLUSTER: nothing to delete"
fi
log "left alone: the docker image $IMAGE (docker rmi $IMAGE removes it) and"
log "$ENV_FILE (delete it to have make run-local fill it again from KFP's secret)."
