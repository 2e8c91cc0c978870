#!/usr/bin/env bash
# Makes a Debian base image from Debian's archive (debootstrap + docker import), for machines
# that reach a Debian mirror but no image registry. Idempotent: an existing tag is kept.
#   images/make-debian-base.sh [TAG]      (default simclrv2-base/debian:bookworm)
# Environment: SUITE (bookworm), MIRROR (http://deb.debian.org/debian), DOCKER (docker).
set -euo pipefail

TAG="${1:-simclrv2-base/debian:bookworm}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
DOCKER="${DOCKER:-docker}"

fail() { echo "make-debian-base: $*" >&2; exit 1; }

command -v "$DOCKER" >/dev/null || fail "'$DOCKER' not found: install Docker (or set DOCKER=)."
"$DOCKER" info >/dev/null 2>&1 || fail "no Docker engine answers ('$DOCKER info' failed): start dockerd."
if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
    echo "make-debian-base: $TAG already exists; nothing to do (docker rmi $TAG to rebuild)."
    exit 0
fi
command -v debootstrap >/dev/null \
    || fail "debootstrap not found: apt-get install -y debootstrap (or pass a BASE_IMAGE you can pull)."
[ "$(id -u)" = 0 ] || fail "debootstrap needs root: run with sudo."

ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT
echo "make-debian-base: debootstrap $SUITE from $MIRROR (about 2 minutes)"
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
    || { tail -20 "$ROOTFS.log" >&2; fail "debootstrap failed (log above)."; }
rm -f "$ROOTFS.log"
# Package caches only make the image bigger; apt-get update refills the lists when needed.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar --numeric-owner -C "$ROOTFS" -c . \
    | "$DOCKER" import --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase $SUITE $MIRROR" - "$TAG" >/dev/null
echo "make-debian-base: built $TAG ($("$DOCKER" image inspect -f '{{.Size}}' "$TAG") bytes)"
