#!/usr/bin/env bash
# Fetch Fashion-MNIST (Zalando, MIT licence) from the Debian archive, without root.
#
# Downloads the Debian package dataset-fashion-mnist with `apt-get download` and unpacks it
# (dpkg-deb -x) under .cache/datasets/fashion-mnist in the repository, so that the IDX files end
# up in .cache/datasets/fashion-mnist/usr/share/datasets/fashion-mnist, where
# simclrv2.datasets.fashion_mnist looks for them. Idempotent: does nothing if the files are
# already there or the package is installed system-wide (/usr/share/datasets/fashion-mnist).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGE=dataset-fashion-mnist
SUBDIR=usr/share/datasets/fashion-mnist
CACHE=.cache/datasets
DEST=$CACHE/fashion-mnist
FILES=(
    train-images-idx3-ubyte.gz
    train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz
    t10k-labels-idx1-ubyte.gz
)

log() { echo "[data] $*"; }

has_files() {
    local f
    for f in "${FILES[@]}"; do
        [[ -s "$1/$f" ]] || return 1
    done
}

for dir in "/$SUBDIR" "$DEST/$SUBDIR"; do
    if has_files "$dir"; then
        log "Fashion-MNIST already present in $dir"
        exit 0
    fi
done

fail() {
    {
        log "ERROR: $*"
        log "Not on Debian/Ubuntu (or no access to its archive)? Install the package"
        log "$PACKAGE another way, or download the four Fashion-MNIST IDX files"
        log "(${FILES[*]})"
        log "into a folder and set SIMCLRV2_FASHION_MNIST=/that/folder."
    } >&2
    exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "apt-get not found"
command -v dpkg-deb >/dev/null 2>&1 || fail "dpkg-deb not found"

mkdir -p "$CACHE"
TMP=$(mktemp -d "$CACHE/.fashion-mnist.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

download() {
    # apt-get download writes into the working directory. As root, apt warns that the download
    # is "unsandboxed" (user _apt cannot write there); that is harmless.
    (cd "$TMP" && apt-get download "$PACKAGE")
}

log "downloading $PACKAGE (about 31 MB) with apt-get download"
if ! download; then
    if [[ $(id -u) -eq 0 ]]; then
        log "apt-get download failed; package lists may be missing or stale: running apt-get update"
        apt-get update || fail "apt-get update failed"
        download || fail "apt-get download $PACKAGE failed even after apt-get update"
    else
        fail "apt-get download $PACKAGE failed (not root, so no apt-get update tried;" \
            "run 'sudo apt-get update' and retry)"
    fi
fi

shopt -s nullglob
debs=("$TMP"/"${PACKAGE}"_*.deb)
shopt -u nullglob
[[ ${#debs[@]} -eq 1 ]] || fail "expected one downloaded .deb in $TMP, found ${#debs[@]}"
log "downloaded $(basename "${debs[0]}")"

log "extracting into $DEST"
dpkg-deb -x "${debs[0]}" "$TMP/root"
has_files "$TMP/root/$SUBDIR" || fail "the package does not contain ${FILES[*]} in /$SUBDIR"

# Move into place only once complete: an interrupted run leaves only a temp dir behind (removed
# by the trap, or ignored next time), never a half-extracted $DEST that looks complete.
rm -rf "$DEST"
if ! mv -T "$TMP/root" "$DEST" 2>/dev/null; then
    # A concurrent run moved its copy into place between our rm and mv: use that one.
    has_files "$DEST/$SUBDIR" || fail "could not move the extracted files into $DEST"
fi
log "Fashion-MNIST ready in $DEST/$SUBDIR:"
for file in "$DEST/$SUBDIR"/*; do
    log "  $(basename "$file") ($(wc -c <"$file") bytes)"
done
