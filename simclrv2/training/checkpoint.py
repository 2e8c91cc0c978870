"""Checkpoints of a training step: saved atomically to a folder or S3 prefix, resumed from.

A checkpoint is the caller's state dict, saved as ``{directory}/step-{step:09d}.pt`` with
``torch.save``: typically the model's, optimizer's and scheduler's ``state_dict()``, the step
and epoch, :func:`capture_rng_state`, the data position and the config. :class:`CheckpointStore`
writes it through :meth:`ObjectStore.open_write`, so it appears only once complete (local: a
temporary name renamed into place; S3: a multipart upload completed on close): a killed run
leaves either the whole checkpoint or none.

Each checkpoint is sealed by a digest file beside it, ``step-{step:09d}.pt.sha256`` (the
format of ``sha256sum``, so ``sha256sum -c`` checks it by hand), published after every byte
of the checkpoint was written and before the checkpoint itself: a ``step-*.pt`` that exists
always has its digest. :meth:`CheckpointStore.load` re-hashes the file and refuses one that
no longer matches (truncated or changed after it was written: a partial copy, a broken disk,
an overwrite by another program) or that has no digest (not written completely by
:meth:`CheckpointStore.save`). Which checkpoint a run resumes from, falling back past
damaged ones, is decided in simclrv2/distributed/agreed_checkpoint.py.

Checkpoints come back from S3, which other people and programs can write to, and unpickling
arbitrary objects runs arbitrary code. So a checkpoint may hold only tensors, plain values
(int, float, str, bool, None) and dicts / lists / tuples of them; :meth:`CheckpointStore.save`
refuses anything else, and :meth:`CheckpointStore.load` reads with
``torch.load(weights_only=True)``, which refuses any other pickled object.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import sys
import tempfile
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from simclrv2.storage.errors import ObjectNotFound, StorageError
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import basename, is_s3_uri, join_uri, split_s3_uri

try:
    import numpy
except ImportError:  # numpy is optional here: its RNG is saved only when it is installed
    numpy = None

__all__ = [
    "CheckpointError",
    "CheckpointStore",
    "capture_rng_state",
    "restore_rng_state",
    "unwrap_model",
]

_log = logging.getLogger(__name__)

# Strict: "step-" then at least 9 digits (zero-padded to 9, no extra leading zeros) then ".pt".
_CHECKPOINT_NAME = re.compile(r"step-(\d{9,})\.pt")
_DIGEST_SUFFIX = ".sha256"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PLAIN_TYPES = (int, float, str, bool, type(None))
_TENSOR_TYPES = (torch.Tensor, nn.Parameter)
_MAPPING_TYPES = (dict, OrderedDict)
_SEQUENCE_TYPES = (list, tuple)
_COPY_CHUNK = 8 * 1024 * 1024


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be loaded: corrupt, truncated, or not a plain-tensor checkpoint."""


class CheckpointStore:
    """The checkpoints of one run in one folder or S3 prefix: save, list, find the newest, load.

    ``directory`` is a local folder or ``s3://bucket/prefix`` that outlives the process.
    After each save only the newest ``keep`` checkpoints are kept. A checkpoint is never
    overwritten: saving a step that is already there, or one older than the newest, raises
    FileExistsError. Loading from S3 first copies the object to a temporary file in
    ``spool_dir`` (default: the system temp folder, ``TMPDIR``), since ``torch.load`` needs a
    seekable file; the copy is deleted once loaded.
    """

    def __init__(
        self,
        directory: str,
        store: ObjectStore | None = None,
        keep: int = 3,
        *,
        spool_dir: str | None = None,
    ) -> None:
        if not isinstance(directory, str) or not directory:
            raise ValueError(f"checkpoint directory must be a folder or s3:// URI: {directory!r}")
        if is_s3_uri(directory):
            split_s3_uri(directory)  # a malformed URI fails here, not at the first save
        if type(keep) is not int or keep < 1:
            raise ValueError(f"keep must be an int >= 1 (checkpoints to keep), not {keep!r}")
        self.directory = directory
        self.store = store if store is not None else ObjectStore()
        self.keep = keep
        self.spool_dir = spool_dir

    def __repr__(self) -> str:
        return f"CheckpointStore({self.directory!r}, keep={self.keep})"

    def uri_for_step(self, step: int) -> str:
        """The URI of the checkpoint of ``step``: ``{directory}/step-{step:09d}.pt``."""
        return join_uri(self.directory, f"step-{step:09d}.pt")

    def digest_uri_for_step(self, step: int) -> str:
        """The URI of the digest that seals the checkpoint of ``step``."""
        return self.uri_for_step(step) + _DIGEST_SUFFIX

    def steps(self) -> list[int]:
        """Steps of the complete (sealed) checkpoints in the directory, ascending.

        A checkpoint counts when both ``step-NNNNNNNNN.pt`` and its digest
        ``step-NNNNNNNNN.pt.sha256`` are directly in the directory; unfinished writes
        (``*.tmp-*``), a checkpoint without its digest, other files and sub-folders are
        ignored. Whether the content still matches its digest is checked by :meth:`load`.
        """
        checkpoints, digests = self._scan()
        return sorted(checkpoints & digests)

    def unsealed_steps(self) -> list[int]:
        """Steps with a ``step-NNNNNNNNN.pt`` but no digest, ascending: files that
        :meth:`save` did not finish writing (copied without their digest, written by an
        older simclrv2, or unsealed by a resume that found them damaged)."""
        checkpoints, digests = self._scan()
        return sorted(checkpoints - digests)

    def _scan(self) -> tuple[set[int], set[int]]:
        """(steps with a checkpoint file, steps with a digest file), by exact names only."""
        checkpoints, digests = set(), set()
        for uri, _ in self.store.list_files(self.directory):
            name = basename(uri)
            found = digests if name.endswith(_DIGEST_SUFFIX) else checkpoints
            match = _CHECKPOINT_NAME.fullmatch(name.removesuffix(_DIGEST_SUFFIX))
            if match is None:
                continue
            digits = match.group(1)
            step = int(digits)
            # Reject "step-0000000001.pt" and files in sub-folders: only names save() writes.
            checkpoint_uri = uri.removesuffix(_DIGEST_SUFFIX)
            if f"{step:09d}" == digits and checkpoint_uri == self.uri_for_step(step):
                found.add(step)
        return checkpoints, digests

    def latest(self) -> str | None:
        """URI of the newest sealed checkpoint (highest step), or None if there is none."""
        steps = self.steps()
        return self.uri_for_step(steps[-1]) if steps else None

    def save(self, step: int, state: dict[str, Any]) -> str:
        """Write ``state`` as the checkpoint of ``step`` atomically; returns its URI.

        ``state`` may hold only tensors, int/float/str/bool/None and dicts/lists/tuples of
        them (TypeError naming the offending entry otherwise). The bytes stream from
        ``torch.save`` straight into the store's writer (``torch.save`` writes forward only),
        so no second copy of the tensors is made; their SHA-256 is computed on the way and
        written to the digest file before the checkpoint is published. A leftover of an
        interrupted save of the same step (a checkpoint or digest alone) is replaced.
        Afterwards the oldest checkpoints beyond ``keep`` are deleted.
        """
        if type(step) is not int:
            raise TypeError(f"step must be an int, not {type(step).__name__} ({step!r})")
        if step < 0:
            raise ValueError(f"step must be >= 0, not {step}")
        if type(state) not in _MAPPING_TYPES:
            raise TypeError(f"checkpoint state must be a dict, not {type(state).__name__}")
        _check_plain(state, "state")
        state = _canonical(state)

        existing = self.steps()
        uri = self.uri_for_step(step)
        if step in existing:
            raise FileExistsError(
                f"a checkpoint for step {step} already exists at {uri}; checkpoints are never "
                "overwritten, and a resumed run continues after its checkpoint so it never "
                "saves an earlier step again. Resume from it, or use a new directory."
            )
        if existing and existing[-1] > step:
            raise FileExistsError(
                f"{self.directory} already holds a checkpoint for the later step {existing[-1]}, "
                f"so step {step} would be older than it: this run did not resume from it. "
                "Resume from the newest checkpoint, or use a new directory."
            )

        # The writer publishes only on a clean exit; an error in torch.save leaves nothing.
        with self.store.open_write(uri) as stream:
            sink = _WriteErrorRecorder(stream)
            try:
                torch.save(state, sink)
            except Exception:
                # torch.save writes its zip trailer even after a failed write and then fails
                # with "unexpected pos"; the storage error is the one that says what happened.
                if sink.error is not None:
                    raise sink.error from None
                raise
            size = stream.bytes_written
            # Sealed before it is published: a killed save leaves at most a digest alone
            # (ignored, replaced by the next save of this step), never an unsealed checkpoint.
            digest = f"{stream.sha256_hex()}  {basename(uri)}\n"
            self.store.write_bytes(self.digest_uri_for_step(step), digest.encode())
        _log.info("saved checkpoint of step %d to %s (%d bytes)", step, uri, size)
        self._prune()
        return uri

    def load(self, uri: str | None = None, map_location: Any = "cpu") -> dict[str, Any]:
        """The state saved in ``uri`` (default: the newest checkpoint), tensors on map_location.

        The file is first hashed and compared with its digest: a checkpoint without its
        digest, or whose content no longer matches it (truncated, changed), raises
        CheckpointError naming the URI, as does a file that ``torch.load(weights_only=True)``
        refuses (any other pickled object, or a corrupt file). FileNotFoundError when ``uri``
        is None and the directory has no checkpoint.
        """
        if uri is None:
            uri = self.latest()
            if uri is None:
                raise FileNotFoundError(f"no checkpoint (step-*.pt) in {self.directory}")
        expected = self._expected_sha256(uri)
        # torch.load seeks (the zip index is at the end), which an S3 body cannot: S3 objects
        # are copied to a temporary file, hashed on the way; a local file is hashed in place.
        with self.store.open_read(uri) as body:
            if is_s3_uri(uri):
                with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
                    _check_sha256(uri, _copy_hashing(body, spool), expected)
                    spool.seek(0)
                    state = _torch_load(spool, uri, map_location)
            else:
                _check_sha256(uri, _copy_hashing(body, None), expected)
                body.seek(0)
                state = _torch_load(body, uri, map_location)
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{uri} holds a {type(state).__name__}, not a checkpoint state dict: it was not "
                "written by CheckpointStore.save"
            )
        _log.info("loaded checkpoint %s", uri)
        return state

    def unseal(self, step: int) -> None:
        """Delete the digest of ``step``'s checkpoint: it no longer counts (see :meth:`steps`)
        and the run may save that step again. For a checkpoint that failed :meth:`load`."""
        self.store.delete(self.digest_uri_for_step(step))

    def _expected_sha256(self, uri: str) -> str:
        """The SHA-256 the digest beside ``uri`` records; CheckpointError if it has none."""
        digest_uri = uri + _DIGEST_SUFFIX
        try:
            text = self.store.read_bytes(digest_uri).decode("ascii", "replace")
        except ObjectNotFound:
            raise CheckpointError(
                f"checkpoint {uri} has no digest {basename(digest_uri)} beside it: it was not "
                "written completely by this version of simclrv2 (a copy without its digest, "
                "or an older release), so its content cannot be checked"
            ) from None
        fields = text.split()
        if len(fields) != 2 or not _SHA256_HEX.fullmatch(fields[0]) or fields[1] != basename(uri):
            raise CheckpointError(
                f"the digest {digest_uri} is not '<sha256>  {basename(uri)}': damaged or "
                "written by another program"
            )
        return fields[0]

    def _prune(self) -> None:
        """Delete the oldest checkpoints beyond ``keep`` (the newest always stays), with any
        older leftovers of interrupted saves; the checkpoint before its digest, so that a
        prune cut short never leaves an unsealed checkpoint."""
        steps = self.steps()
        if len(steps) <= self.keep:
            return
        oldest_kept = steps[-self.keep]
        checkpoints, digests = self._scan()
        for step in sorted(checkpoints | digests):
            if step >= oldest_kept:
                break
            for uri in (self.uri_for_step(step), self.digest_uri_for_step(step)):
                try:
                    self.store.delete(uri)
                except (StorageError, OSError) as error:
                    # The new checkpoint is safely written; a leftover old one only costs space.
                    _log.warning("could not delete the old checkpoint %s: %s", uri, error)


class _WriteErrorRecorder:
    """Passes writes on to ``stream`` and remembers the first one that failed."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.error: Exception | None = None

    def write(self, data: Any) -> int:
        try:
            return self.stream.write(data)
        except Exception as error:
            if self.error is None:
                self.error = error
            raise

    def flush(self) -> None:
        self.stream.flush()


def _copy_hashing(source: Any, sink: Any | None) -> str:
    """SHA-256 (hex) of everything ``source`` yields, copied to ``sink`` unless None."""
    digest = hashlib.sha256()
    while chunk := source.read(_COPY_CHUNK):
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
    return digest.hexdigest()


def _check_sha256(uri: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {uri} fails its content check: its SHA-256 is {actual[:16]}... but "
            f"its digest records {expected[:16]}... (truncated or changed after it was written)"
        )


def _canonical(value: Any) -> Any:
    """``value`` with every string interned and every dict / list / tuple rebuilt (tensors
    kept): pickle writes an object it has seen once by reference, so which equal strings or
    containers happen to be one object would change the bytes. A resumed run's loaded
    strings are not the ones an uninterrupted run's code made; canonical, both save the same
    state as the same bytes (and the same digest)."""
    kind = type(value)
    if kind is str:
        return sys.intern(value)
    if kind in _MAPPING_TYPES:
        rebuilt = kind((_canonical(key), _canonical(item)) for key, item in value.items())
        metadata = getattr(value, "_metadata", None)  # a state_dict's module versions
        if metadata is not None:
            rebuilt._metadata = _canonical(metadata)
        return rebuilt
    if kind in _SEQUENCE_TYPES:
        return kind(_canonical(item) for item in value)
    return value


def _check_plain(value: Any, path: str) -> None:
    """Raise TypeError naming ``path`` if ``value`` holds anything but tensors and plain values."""
    kind = type(value)
    if kind in _TENSOR_TYPES or kind in _PLAIN_TYPES:
        return
    if kind in _MAPPING_TYPES:
        for key, item in value.items():
            if type(key) not in _PLAIN_TYPES:
                raise TypeError(
                    f"{path} has a key {key!r} of type {type(key).__name__}: checkpoint dict "
                    "keys must be int, float, str, bool or None"
                )
            _check_plain(item, f"{path}[{key!r}]")
        return
    if kind in _SEQUENCE_TYPES:
        for index, item in enumerate(value):
            _check_plain(item, f"{path}[{index}]")
        return
    raise TypeError(
        f"{path} is a {kind.__module__}.{kind.__qualname__}, which a checkpoint cannot hold: "
        "only tensors, int, float, str, bool, None and dicts/lists/tuples of them, so that it "
        "loads with torch.load(weights_only=True). Store its state_dict() or plain values."
    )


def _torch_load(stream: Any, uri: str, map_location: Any) -> Any:
    """torch.load(weights_only=True) of ``stream``; errors become CheckpointError naming ``uri``."""
    try:
        return torch.load(stream, map_location=map_location, weights_only=True)
    except Exception as error:  # any failure in here is about this file's content
        if "Weights only load failed" in str(error):
            # torch's message advises weights_only=False; say why we never do that instead.
            reason = str(error).rpartition("WeightsUnpickler error:")[2].strip().splitlines()
            raise CheckpointError(
                f"refused to load {uri}: it is not a plain-tensor checkpoint (torch.load with "
                f"weights_only=True rejected it: {reason[0] if reason else 'unpickling failed'}). "
                "It holds other pickled objects, which could run arbitrary code, or is corrupt."
            ) from error
        raise CheckpointError(
            f"could not load checkpoint {uri}: corrupt, truncated or not a torch.save file "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error


def capture_rng_state() -> dict[str, Any]:
    """The state of every random generator a training step draws from, as plain values.

    ``torch``: the CPU generator (uint8 tensor); ``cuda``: one tensor per visible GPU, when
    CUDA is available; ``python``: the ``random`` module; ``numpy``: numpy's global generator,
    when numpy is installed. Tuples and numpy arrays are turned into dicts, lists and tensors
    so the result loads with ``torch.load(weights_only=True)``.
    """
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if numpy is not None:
        name, keys, position, has_gauss, cached_gaussian = numpy.random.get_state()
        state["numpy"] = {
            "bit_generator": name,
            "keys": torch.from_numpy(keys.astype(numpy.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put every generator back to what :func:`capture_rng_state` saw.

    CUDA states are restored for the GPUs present now (the first ones if there are fewer
    than at capture); a state captured without CUDA or numpy leaves those generators as they
    are. Raises ValueError when ``state`` is not a dict from :func:`capture_rng_state`.
    """
    if not isinstance(state, dict) or "torch" not in state or "python" not in state:
        raise ValueError(
            "not an RNG state from capture_rng_state(): expected a dict with 'torch' and "
            f"'python' entries, got {type(state).__name__}"
            + (f" with keys {sorted(state)}" if isinstance(state, dict) else "")
        )
    # map_location may have put the tensors on a GPU; the setters want CPU byte tensors.
    torch.set_rng_state(state["torch"].cpu())
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)
    if "numpy" in state and numpy is not None:
        saved = state["numpy"]
        numpy.random.set_state(
            (
                saved["bit_generator"],
                saved["keys"].cpu().numpy().astype(numpy.uint32),
                saved["position"],
                saved["has_gauss"],
                saved["cached_gaussian"],
            )
        )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel wrappers (itself otherwise).

    Save ``unwrap_model(model).state_dict()`` so the keys have no ``module.`` prefix and load
    into the bare model as well as a wrapped one.
    """
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model
