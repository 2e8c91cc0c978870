"""Checkpoints in a local folder and on a real S3 server (SeaweedFS).

Checks a full round trip of a real model, optimizer, scheduler, RNG and config (the restored
run continues exactly like the original), pruning to ``keep``, strict file names, refusal of
non-plain state and of overwrites, refusal of arbitrary pickle on load, clear errors for
corrupt files, that a save that fails half-way leaves the previous checkpoint the newest, and
the digest that seals every checkpoint: written before the checkpoint appears, checked
(`sha256sum -c` agrees) on every load, a truncated or changed file or one without its digest
refused by name.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import subprocess
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from simclrv2.storage.multipart_writer import MIN_PART_SIZE
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import is_s3_uri, join_uri, split_s3_uri
from simclrv2.training import checkpoint
from simclrv2.training.checkpoint import (
    CheckpointError,
    CheckpointStore,
    capture_rng_state,
    restore_rng_state,
    unwrap_model,
)


@dataclass
class Location:
    directory: str
    store: ObjectStore


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def location(request: pytest.FixtureRequest, tmp_path: Any) -> Location:
    """A checkpoint directory: a local folder, or a prefix in a fresh S3 bucket."""
    if request.param == "local":
        return Location(str(tmp_path / "run" / "checkpoints"), ObjectStore())
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    # The smallest part size S3 allows, so a 6 MiB checkpoint is a real multipart upload.
    store = ObjectStore(server.settings, part_size=MIN_PART_SIZE)
    return Location(f"s3://{bucket}/run/checkpoints", store)


def _make_training(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    return model, optimizer, scheduler


def _train_step(model: nn.Module, optimizer: Any, scheduler: Any, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(6, 8, generator=generator)
    targets = torch.randint(0, 4, (6,), generator=generator)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(inputs), targets).backward()
    optimizer.step()
    scheduler.step()


def _draws() -> tuple[torch.Tensor, float, np.ndarray]:
    return torch.rand(5), random.random(), np.random.standard_normal(3)


def _assert_same_draws(first: tuple, second: tuple) -> None:
    assert torch.equal(first[0], second[0])
    assert first[1] == second[1]
    np.testing.assert_array_equal(first[2], second[2])


# Round trip --------------------------------------------------------------------------------


def test_round_trip_resumes_training_exactly(location: Location) -> None:
    model, optimizer, scheduler = _make_training()
    for step in range(3):
        _train_step(model, optimizer, scheduler, seed=step)
    # Odd numbers of Gaussian draws leave a cached Gaussian in both generators: saved too.
    random.gauss(0, 1)
    np.random.standard_normal(1)
    config = {"lr": 0.1, "name": "tiny", "flags": [True, None], "betas": (0.9, 0.99)}
    state = {
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": 3,
        "epoch": 0,
        "rng": capture_rng_state(),
        "data_position": {"epoch": 0, "batches_seen": 3},
        "config": config,
    }
    expected_draws = _draws()
    store = CheckpointStore(location.directory, location.store)

    uri = store.save(3, state)

    assert uri == join_uri(location.directory, "step-000000003.pt")
    assert store.latest() == uri and store.steps() == [3]
    loaded = store.load()
    assert loaded["step"] == 3 and loaded["epoch"] == 0
    assert loaded["config"] == config and loaded["data_position"] == state["data_position"]

    restored_model, restored_optimizer, restored_scheduler = _make_training(seed=1)
    restored_model.load_state_dict(loaded["model"])
    restored_optimizer.load_state_dict(loaded["optimizer"])
    restored_scheduler.load_state_dict(loaded["scheduler"])
    restore_rng_state(loaded["rng"])
    _assert_same_draws(_draws(), expected_draws)

    model.eval()
    restored_model.eval()
    probe = torch.randn(5, 8)
    assert torch.equal(model(probe), restored_model(probe))
    model.train()
    restored_model.train()
    for step in range(3, 5):
        _train_step(model, optimizer, scheduler, seed=step)
        _train_step(restored_model, restored_optimizer, restored_scheduler, seed=step)
    for original, restored in zip(model.parameters(), restored_model.parameters(), strict=True):
        assert torch.equal(original, restored)
    assert restored_scheduler.get_last_lr() == scheduler.get_last_lr()


def test_rng_capture_and_restore_reproduce_every_generator() -> None:
    random.gauss(0, 1)
    np.random.standard_normal(1)
    state = capture_rng_state()
    first = _draws()
    _draws()  # move every generator on
    restore_rng_state(state)
    _assert_same_draws(_draws(), first)


def test_rng_state_is_plain_and_survives_weights_only_round_trip() -> None:
    state = capture_rng_state()
    first = _draws()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True))
    _assert_same_draws(_draws(), first)


def test_restore_rng_state_rejects_other_dicts() -> None:
    with pytest.raises(ValueError, match="capture_rng_state"):
        restore_rng_state({"seed": 0})


def test_unwrap_model_drops_the_module_prefix() -> None:
    model = nn.Linear(2, 2)
    wrapped = nn.DataParallel(nn.DataParallel(model))
    assert all(key.startswith("module.module.") for key in wrapped.state_dict())
    assert unwrap_model(wrapped) is model
    assert unwrap_model(model) is model
    assert list(unwrap_model(wrapped).state_dict()) == ["weight", "bias"]


# Listing and pruning -------------------------------------------------------------------------


def test_keep_prunes_oldest_and_ignores_other_files(location: Location) -> None:
    store = CheckpointStore(location.directory, location.store, keep=2)
    others = [
        "notes.txt",
        "step-000000009.pt.tmp-0123456789ab",  # an unfinished local write
        "step-9.pt",
        "step-0000000010.pt",
        "step-000000011.pt.bak",
        "sub/step-000000099.pt",
    ]
    for name in others:
        location.store.write_bytes(join_uri(location.directory, name), b"not a checkpoint")

    for step in (1, 2, 3):
        store.save(step, {"step": step, "weights": torch.full((4,), float(step))})

    assert store.steps() == [2, 3]
    assert store.latest() == join_uri(location.directory, "step-000000003.pt")
    assert torch.equal(store.load()["weights"], torch.full((4,), 3.0))
    for name in others:  # pruning touches only checkpoints
        assert location.store.exists(join_uri(location.directory, name))


def test_empty_directory_has_no_checkpoint(location: Location) -> None:
    store = CheckpointStore(location.directory, location.store)
    assert store.steps() == [] and store.latest() is None
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        store.load()


@pytest.mark.parametrize("keep", [0, -1, 1.5, True])
def test_keep_must_be_a_positive_int(tmp_path: Any, keep: Any) -> None:
    with pytest.raises(ValueError, match="keep"):
        CheckpointStore(str(tmp_path), keep=keep)


# Bad input -----------------------------------------------------------------------------------


class _Opaque:
    pass


@pytest.mark.parametrize(
    ("state", "path"),
    [
        ({"config": {"schedule": lambda step: step}}, r"state\['config'\]\['schedule'\]"),
        ({"items": [1, (2, _Opaque())]}, r"state\['items'\]\[1\]\[1\]"),
        ({"loss": np.float64(1.5)}, r"state\['loss'\]"),
        ({"shape": torch.Size([2, 3])}, r"state\['shape'\]"),
        ({"model": {("a", 1): torch.zeros(1)}}, r"state\['model'\] has a key"),
    ],
)
def test_non_plain_state_is_refused_naming_its_path(tmp_path: Any, state: dict, path: str) -> None:
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    with pytest.raises(TypeError, match=path):
        store.save(1, state)
    assert store.steps() == []


def test_bad_step_is_refused(tmp_path: Any) -> None:
    store = CheckpointStore(str(tmp_path))
    with pytest.raises(TypeError, match="step must be an int"):
        store.save(np.int64(1), {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        store.save(-1, {})


def test_existing_or_older_step_is_never_overwritten(location: Location) -> None:
    store = CheckpointStore(location.directory, location.store)
    store.save(5, {"value": torch.tensor(5)})

    with pytest.raises(FileExistsError, match=r"step 5 already exists.*never saves an earlier"):
        store.save(5, {"value": torch.tensor(-1)})
    with pytest.raises(FileExistsError, match="later step 5"):
        store.save(3, {"value": torch.tensor(-1)})

    assert store.steps() == [5]
    assert store.load()["value"].item() == 5


# Loading untrusted or damaged files ----------------------------------------------------------

_side_effects: list[str] = []


def _record(message: str) -> None:
    _side_effects.append(message)


class _Payload:
    """Unpickling this calls ``_record``: stands in for code an attacker would run."""

    def __reduce__(self) -> tuple:
        return _record, ("unpickled and ran code",)


def _write_sealed(location: Location, name: str, content: bytes) -> str:
    """A checkpoint file written by another program, with a digest that matches it."""
    uri = join_uri(location.directory, name)
    location.store.write_bytes(uri, content)
    digest = f"{hashlib.sha256(content).hexdigest()}  {name}\n"
    location.store.write_bytes(uri + ".sha256", digest.encode())
    return uri


def test_arbitrary_pickle_is_refused(location: Location) -> None:
    store = CheckpointStore(location.directory, location.store)
    buffer = io.BytesIO()
    torch.save({"model": {"weight": torch.ones(2)}, "extra": _Payload()}, buffer)
    # Whoever can write the checkpoint can write its digest: the digest is no defence here.
    uri = _write_sealed(location, "step-000000001.pt", buffer.getvalue())
    _side_effects.clear()

    assert store.latest() == uri
    with pytest.raises(CheckpointError, match=r"refused to load .*step-000000001\.pt") as caught:
        store.load()
    assert isinstance(caught.value.__cause__, pickle.UnpicklingError)
    assert _side_effects == []


def test_corrupt_or_truncated_files_give_clear_errors(location: Location) -> None:
    store = CheckpointStore(location.directory, location.store)
    good = store.save(1, {"weights": torch.arange(1000.0)})
    # Sealed as they are: what torch.load itself finds wrong is named too.
    truncated = _write_sealed(location, "step-000000002.pt", location.store.read_bytes(good)[:-200])
    garbage = _write_sealed(location, "step-000000003.pt", b"\x00 this is not a checkpoint " * 20)

    for uri in (truncated, garbage):
        with pytest.raises(CheckpointError, match=rf"{uri}"):
            store.load(uri)
    assert torch.equal(store.load(good)["weights"], torch.arange(1000.0))


# Failures while saving -----------------------------------------------------------------------


FAIL_AFTER = MIN_PART_SIZE + 1024 * 1024  # bytes: past the first S3 part


def _fail_in_torch_save(monkeypatch: pytest.MonkeyPatch, store: ObjectStore) -> list[int]:
    """torch.save writes part of a checkpoint, then fails; returns [bytes written] once failed."""
    written: list[int] = []

    def save_then_fail(obj: Any, stream: Any) -> None:
        written.append(stream.write(b"\0" * FAIL_AFTER))
        raise OSError("simulated failure half-way through the checkpoint")

    monkeypatch.setattr(checkpoint.torch, "save", save_then_fail)
    return written


def _fail_in_storage(monkeypatch: pytest.MonkeyPatch, store: ObjectStore) -> list[int]:
    """The real torch.save runs, but the storage fails after FAIL_AFTER bytes; returns
    [bytes written] once failed."""
    real_open_write = store.open_write
    written: list[int] = []

    def open_failing_writer(uri: str) -> Any:
        writer = real_open_write(uri)
        real_write = writer.write

        def write(data: Any) -> int:
            if writer.bytes_written + memoryview(data).nbytes > FAIL_AFTER:
                written.append(writer.bytes_written)
                raise OSError("simulated failure half-way through the checkpoint")
            return real_write(data)

        writer.write = write  # type: ignore[method-assign]
        return writer

    monkeypatch.setattr(store, "open_write", open_failing_writer)
    return written


@pytest.mark.parametrize("fail", [_fail_in_torch_save, _fail_in_storage])
def test_failure_mid_save_leaves_previous_checkpoint_newest(
    location: Location, monkeypatch: pytest.MonkeyPatch, fail: Any
) -> None:
    store = CheckpointStore(location.directory, location.store)
    previous = store.save(1, {"weights": torch.zeros(4)})
    written = fail(monkeypatch, location.store)
    # 8 MiB in 1 MiB tensors: on S3 the first 5 MiB part is uploaded before the failure.
    state = {"weights": [torch.zeros(256 * 1024) for _ in range(8)]}

    # The storage's error comes out, not torch's follow-up "unexpected pos" from its zip writer.
    with pytest.raises(OSError, match="simulated failure"):
        store.save(2, state)

    assert written[0] > MIN_PART_SIZE
    assert store.latest() == previous and store.steps() == [1]
    assert [uri for uri, _ in location.store.list_files(location.directory)] == [
        previous,
        previous + ".sha256",
    ]
    if is_s3_uri(location.directory):
        bucket, _ = split_s3_uri(location.directory)
        uploads = location.store.client.list_multipart_uploads(Bucket=bucket)
        assert uploads.get("Uploads", []) == []
    else:
        assert sorted(os.listdir(location.directory)) == [
            "step-000000001.pt",
            "step-000000001.pt.sha256",
        ]


# The digest that seals each checkpoint -------------------------------------------------------


def test_the_digest_is_sha256sum_format_and_published_before_the_checkpoint(
    location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(location.directory, location.store)
    published: list[str] = []
    real_open_write = location.store.open_write

    def recording_open_write(uri: str) -> Any:
        writer = real_open_write(uri)
        real_close = writer.close

        def close() -> None:
            if not writer.closed:
                published.append(os.path.basename(uri))
            real_close()

        writer.close = close  # type: ignore[method-assign]
        return writer

    monkeypatch.setattr(location.store, "open_write", recording_open_write)
    uri = store.save(7, {"weights": torch.arange(10.0)})

    assert published == ["step-000000007.pt.sha256", "step-000000007.pt"]
    content = location.store.read_bytes(uri)
    digest = location.store.read_bytes(uri + ".sha256").decode()
    assert digest == f"{hashlib.sha256(content).hexdigest()}  step-000000007.pt\n"
    if not is_s3_uri(uri):  # the standard tool agrees
        checked = subprocess.run(["sha256sum", "-c", uri + ".sha256"], cwd=location.directory,
                                 capture_output=True, text=True)  # fmt: skip
        assert checked.returncode == 0 and "step-000000007.pt: OK" in checked.stdout


def _damage(location: Location, uri: str, how: str) -> None:
    content = bytearray(location.store.read_bytes(uri))
    if how == "truncated":
        content = content[: len(content) // 2]
    else:  # one bit flipped in the middle, where tensor bytes are: torch.load still reads it
        content[len(content) // 2] ^= 0x01
    location.store.write_bytes(uri, bytes(content))


@pytest.mark.parametrize("how", ["truncated", "one bit flipped"])
def test_a_damaged_checkpoint_fails_its_content_check(location: Location, how: str) -> None:
    store = CheckpointStore(location.directory, location.store)
    uri = store.save(1, {"weights": torch.arange(4096.0)})
    _damage(location, uri, how)

    assert store.steps() == [1]  # still listed: only reading it tells
    with pytest.raises(CheckpointError, match=r"step-000000001\.pt fails its content check"):
        store.load()


def test_a_checkpoint_without_its_digest_is_not_listed_and_not_loaded(location: Location) -> None:
    store = CheckpointStore(location.directory, location.store)
    first = store.save(1, {"weights": torch.zeros(3)})
    second = store.save(2, {"weights": torch.ones(3)})
    location.store.delete(second + ".sha256")

    assert store.steps() == [1] and store.unsealed_steps() == [2]
    assert store.latest() == first
    with pytest.raises(CheckpointError, match=r"step-000000002\.pt has no digest"):
        store.load(second)
    # The step may be saved again (the run that resumes from step 1 does): it is replaced.
    store.save(2, {"weights": torch.full((3,), 2.0)})
    assert store.steps() == [1, 2]
    assert torch.equal(store.load()["weights"], torch.full((3,), 2.0))


def test_a_digest_left_alone_by_a_killed_save_is_ignored_then_replaced(location: Location) -> None:
    store = CheckpointStore(location.directory, location.store)
    store.save(1, {"weights": torch.zeros(3)})
    stale = f"{'0' * 64}  step-000000002.pt\n".encode()
    location.store.write_bytes(join_uri(location.directory, "step-000000002.pt.sha256"), stale)

    assert store.steps() == [1]
    store.save(2, {"weights": torch.ones(3)})
    assert torch.equal(store.load()["weights"], torch.ones(3))


def test_pruning_deletes_digests_and_leftovers_of_older_steps(location: Location) -> None:
    store = CheckpointStore(location.directory, location.store, keep=2)
    for step in (1, 2):
        store.save(step, {"step": step})
    location.store.delete(join_uri(location.directory, "step-000000002.pt.sha256"))  # unsealed
    for step in (3, 4, 5):
        store.save(step, {"step": step})

    listed = location.store.list_files(location.directory)
    names = sorted(os.path.basename(uri) for uri, _ in listed)
    assert names == [f"step-00000000{s}.pt{x}" for s in (4, 5) for x in ("", ".sha256")]
