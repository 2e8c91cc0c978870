"""Find the checkpoint a user points at (a prefix, its .index, a directory, a SavedModel, local
or on S3) and make it a local tensor-bundle prefix.

Released TF1 models are `model.ckpt-N.index` + `.data-*` beside a `checkpoint` state file,
TF2 training checkpoints `ckpt-N.*`, and the TF2 releases are SavedModels whose weights are
the bundle `saved_model/variables/variables.*`. On S3 only the bundle's files are downloaded.
"""

import os
import re

from simclrv2.errors import UsageError
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import is_s3_uri

_STATE_FILE = "checkpoint"
_STATE_LINE = re.compile(r'^model_checkpoint_path:\s*"(.+)"\s*$', re.MULTILINE)
_SAVED_MODEL_BUNDLES = ("variables/variables", "saved_model/variables/variables")
_STEP = re.compile(r"-(\d+)$")


def _latest_in(directory: str) -> str | None:
    """The prefix the directory's `checkpoint` file names, else its newest *.index."""
    state = os.path.join(directory, _STATE_FILE)
    if os.path.isfile(state):
        with open(state, encoding="utf-8", errors="replace") as file:
            match = _STATE_LINE.search(file.read())
        if match:
            named = match.group(1)
            named = named if os.path.isabs(named) else os.path.join(directory, named)
            if os.path.isfile(f"{named}.index"):
                return named
            # A state file written elsewhere keeps that machine's path: use its base name.
            local = os.path.join(directory, os.path.basename(named))
            if os.path.isfile(f"{local}.index"):
                return local
    for bundle in _SAVED_MODEL_BUNDLES:
        if os.path.isfile(os.path.join(directory, f"{bundle}.index")):
            return os.path.join(directory, bundle)
    prefixes = [name[: -len(".index")] for name in os.listdir(directory) if name.endswith(".index")]
    if not prefixes:
        return None

    def step(prefix: str) -> int:
        match = _STEP.search(prefix)
        return int(match.group(1)) if match else -1

    return os.path.join(directory, max(prefixes, key=step))


def local_prefix(path: str) -> str:
    """The tensor-bundle prefix of a local checkpoint path, or a UsageError saying what to pass."""
    if path.endswith(".index"):
        path = path[: -len(".index")]
    if os.path.isdir(path):
        prefix = _latest_in(path)
        if prefix is None:
            raise UsageError(
                f"{path} holds no TensorFlow checkpoint (no *.index file, no checkpoint state "
                "file, no SavedModel variables/): pass the folder of model.ckpt-N.* or ckpt-N.*"
            )
        return prefix
    if os.path.isfile(f"{path}.index"):
        return path
    data = re.match(r"^(.*)\.data-\d{5}-of-\d{5}$", path)
    if data and os.path.isfile(f"{data.group(1)}.index"):
        return data.group(1)
    raise FileNotFoundError(
        f"no TensorFlow checkpoint at {path}: pass its prefix (e.g. .../model.ckpt-250228, "
        "without .index), its .index file or its folder"
    )


def _bundle_file(name: str) -> bool:
    return name == _STATE_FILE or name.endswith(".index") or ".data-" in name


def download_checkpoint(uri: str, store: ObjectStore, directory: str) -> str:
    """Copy the checkpoint files under an s3:// prefix or folder into `directory` (keeping
    their paths below it) and return the local prefix; a local path is used in place."""
    if not is_s3_uri(uri):
        return local_prefix(uri)
    base = uri.rstrip("/")
    if base.endswith(".index"):
        base = base[: -len(".index")]
    parent = base.rsplit("/", 1)[0]
    files = [name for name, _ in store.list_files(base) if _bundle_file(name.rsplit("/", 1)[-1])]
    if not files:  # not a folder: a prefix such as .../model.ckpt-250228
        files = [
            name
            for name, _ in store.list_files(parent)
            if name.startswith(f"{base}.") and _bundle_file(name.rsplit("/", 1)[-1])
        ]
    if not files:
        raise FileNotFoundError(
            f"no TensorFlow checkpoint files under {uri}: pass the s3:// prefix of "
            "model.ckpt-N.* / ckpt-N.* or the folder that holds them"
        )
    for name in files:
        target = os.path.join(directory, name[len(parent) + 1 :])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with store.open_read(name) as source, open(target, "wb") as output:
            while chunk := source.read(1 << 24):
                output.write(chunk)
    return local_prefix(os.path.join(directory, base[len(parent) + 1 :]))
