#!/usr/bin/env bash
# Builds the step images with BuildKit: images/build.sh REPOSITORY TAG [cpu] [gpu]
# tags REPOSITORY:TAG-cpu and REPOSITORY:TAG-gpu. `make images` calls it; see images/README.md.
# Environment (all optional):
#   DOCKER               docker client (default: docker, or a client with built-in BuildKit)
#   BASE_IMAGE           a Debian bookworm image (default debian:bookworm-slim; when that can
#                        be neither found nor pulled, images/make-debian-base.sh makes one)
#   TORCH_CPU_INDEX_URL  where the cpu image gets torch (default PyTorch's CPU index)
#   PIP_OFFLINE          1: install only from images/wheelhouse (`make wheelhouse`); 0: from
#                        the indexes too; auto (default): 1 when the wheelhouse holds torch
#   PIP_CA_BUNDLE        a PEM file of extra CA certificates for pip (BuildKit secret)
#   WHEELHOUSE_PORT      loopback port that serves images/wheelhouse to the build (18431)
set -euo pipefail

fail() { echo "images/build.sh: $*" >&2; exit 1; }

[ $# -ge 2 ] || fail "usage: images/build.sh REPOSITORY TAG [cpu] [gpu]"
REPOSITORY="$1"; TAG="$2"; shift 2
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(cpu gpu)
DEFAULT_BASE_IMAGE=debian:bookworm-slim
BASE_IMAGE="${BASE_IMAGE:-$DEFAULT_BASE_IMAGE}"
TORCH_CPU_INDEX_URL="${TORCH_CPU_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
PIP_OFFLINE="${PIP_OFFLINE:-auto}"
WHEELHOUSE_PORT="${WHEELHOUSE_PORT:-18431}"
cd "$(dirname "$0")/.."
wheelhouse_has_torch() { compgen -G "images/wheelhouse/torch-*.whl" >/dev/null; }
if [ "$PIP_OFFLINE" = auto ]; then
    if wheelhouse_has_torch; then PIP_OFFLINE=1; else PIP_OFFLINE=0; fi
fi

# A client that builds with BuildKit: one with the buildx plugin, else a pre-23 client whose
# built-in BuildKit is switched on by DOCKER_BUILDKIT=1 (Debian's docker.io 20.10).
pick_builder() {
    local candidates=("${DOCKER:-docker}") client
    [ -n "${DOCKER:-}" ] || candidates+=(/usr/bin/docker)
    for client in "${candidates[@]}"; do
        command -v "$client" >/dev/null || continue
        if "$client" buildx version >/dev/null 2>&1; then
            BUILD=("$client" buildx build --load); DOCKER="$client"; return
        fi
        local major
        major="$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)"
        if [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null; then
            BUILD=(env DOCKER_BUILDKIT=1 "$client" build); DOCKER="$client"; return
        fi
    done
    fail "no docker client with BuildKit: install the buildx plugin (docker-buildx-plugin)."
}
pick_builder
"$DOCKER" info >/dev/null 2>&1 || fail "no Docker engine answers ('$DOCKER info' failed): start dockerd."

if [ "$PIP_OFFLINE" = 1 ] && ! wheelhouse_has_torch; then
    fail "PIP_OFFLINE=1 but images/wheelhouse has no torch wheel: run 'make wheelhouse' first."
fi
if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1 \
    && ! "$DOCKER" pull "$BASE_IMAGE" >/dev/null 2>&1; then
    if [ "$BASE_IMAGE" != "$DEFAULT_BASE_IMAGE" ]; then
        fail "base image $BASE_IMAGE is not here and cannot be pulled: pull or build it first."
    fi
    # No registry: the same Debian release, made from Debian's archive.
    BASE_IMAGE=simclrv2-base/debian:bookworm
    echo "images/build.sh: $DEFAULT_BASE_IMAGE cannot be pulled; using $BASE_IMAGE from Debian's archive"
    DOCKER="$DOCKER" images/make-debian-base.sh "$BASE_IMAGE" \
        || fail "no base image: pass BASE_IMAGE= an image you can pull (Debian bookworm)."
fi

# The wheelhouse reaches the build over loopback HTTP, not as build context: sent as context,
# its gigabytes would be copied into the engine's build cache (measured: 3.1 GB per copy).
NETWORK=()
WHEELHOUSE_URL=""
if compgen -G "images/wheelhouse/*.whl" >/dev/null; then
    PYTHON_FOR_SERVER="$(command -v python3 || command -v python)" \
        || fail "serving images/wheelhouse needs python3 on this machine."
    # A fixed port: the URL is a build argument, and a new one each time would invalidate the
    # cached dependency layer.
    port="$WHEELHOUSE_PORT"
    "$PYTHON_FOR_SERVER" -m http.server "$port" --bind 127.0.0.1 --directory images/wheelhouse \
        >/dev/null 2>&1 &
    server_pid=$!
    trap 'kill "$server_pid" 2>/dev/null || true' EXIT
    serving=""
    for _ in $(seq 50); do
        kill -0 "$server_pid" 2>/dev/null || break
        if "$PYTHON_FOR_SERVER" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" \
            2>/dev/null; then serving=1; break; fi
        sleep 0.1
    done
    kill -0 "$server_pid" 2>/dev/null || serving=""
    [ -n "$serving" ] || fail "cannot serve images/wheelhouse on 127.0.0.1:$port (in use?): set WHEELHOUSE_PORT= a free port."
    WHEELHOUSE_URL="http://127.0.0.1:$port/"
    # Host networking for the RUN steps, so that pip reaches the loopback server.
    NETWORK=(--network host)
    [ "${BUILD[1]:-}" = buildx ] && NETWORK+=(--allow network.host)
fi

SECRET=()
if [ -n "${PIP_CA_BUNDLE:-}" ]; then
    [ -s "$PIP_CA_BUNDLE" ] || fail "PIP_CA_BUNDLE=$PIP_CA_BUNDLE is not a readable, non-empty file."
    SECRET=(--secret "id=pip_ca,src=$PIP_CA_BUNDLE")
fi

for target in "${TARGETS[@]}"; do
    case "$target" in
        cpu) index="$TORCH_CPU_INDEX_URL" ;;
        gpu) index="" ;;
        *) fail "unknown target '$target' (cpu or gpu)" ;;
    esac
    # Offline, both targets install the same wheels: one shared dependency layer, not two.
    [ "$PIP_OFFLINE" = 1 ] && index=""
    image="$REPOSITORY:$TAG-$target"
    echo "images/build.sh: building $image from $BASE_IMAGE (offline=$PIP_OFFLINE)"
    "${BUILD[@]}" --file images/Dockerfile --target "$target" --tag "$image" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH_INDEX_URL=$index" \
        --build-arg "PIP_OFFLINE=$PIP_OFFLINE" --build-arg "WHEELHOUSE_URL=$WHEELHOUSE_URL" \
        --label "org.opencontainers.image.revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        --label "org.opencontainers.image.version=$TAG" \
        "${NETWORK[@]}" "${SECRET[@]}" .
    echo "images/build.sh: built $image ($("$DOCKER" image inspect -f '{{.Size}}' "$image") bytes)"
done
