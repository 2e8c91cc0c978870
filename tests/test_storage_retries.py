"""Retries that must not go wrong, against the real S3 server (issue 15).

The outage itself is in tests/test_storage_outage.py; these cover what a retry meets after
the server is back, and a streamed read whose TCP connection really breaks (the socket under
urllib3 shut down, as when the server dies mid-answer).
"""

from __future__ import annotations

import os
import socket

import pytest

from pipelines.local_seaweedfs import SeaweedFS
from simclrv2.storage.errors import StorageError
from simclrv2.storage.object_store import ObjectStore

MiB = 1024 * 1024


@pytest.mark.s3
def test_a_completion_whose_answer_was_lost_counts_as_published(
    s3_server: SeaweedFS, s3_bucket: str
) -> None:
    """The server completed the upload but the answer never came: the retried completion
    finds the upload gone, sees an object of our size and part count, and is satisfied."""
    store = ObjectStore(s3_server.settings, part_size=5 * MiB)
    uri = f"s3://{s3_bucket}/lost-answer.bin"
    data = os.urandom(10 * MiB)
    writer = store.open_write(uri)
    writer.write(data)  # two full parts: both sent, nothing left for close to send
    # What the server did before the connection broke: complete the upload.
    store.client.complete_multipart_upload(
        Bucket=s3_bucket,
        Key="lost-answer.bin",
        UploadId=writer._upload_id,
        MultipartUpload={"Parts": writer._parts},
    )
    writer.close()  # completes again: NoSuchUpload, then recognises its object
    assert writer.published
    assert store.read_bytes(uri) == data


@pytest.mark.s3
def test_a_vanished_upload_that_is_not_ours_still_fails(
    s3_server: SeaweedFS, s3_bucket: str
) -> None:
    """An upload aborted by someone else (a lifecycle rule) is not mistaken for success."""
    store = ObjectStore(s3_server.settings, part_size=5 * MiB)
    uri = f"s3://{s3_bucket}/aborted.bin"
    writer = store.open_write(uri)
    writer.write(os.urandom(10 * MiB))  # two parts sent; close only completes
    store.client.abort_multipart_upload(
        Bucket=s3_bucket, Key="aborted.bin", UploadId=writer._upload_id
    )
    with pytest.raises(StorageError, match="no longer exists"):
        writer.close()
    assert not store.exists(uri)


def _break_connection(stream) -> None:
    """Shut down the TCP connection an open S3 read stream is receiving on."""
    response = stream.raw._body._raw_stream  # botocore StreamingBody -> urllib3 response
    response._connection.sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.s3
def test_a_broken_read_goes_on_where_it_stopped(s3_server: SeaweedFS, s3_bucket: str) -> None:
    store = ObjectStore(s3_server.settings)
    uri = f"s3://{s3_bucket}/stream.bin"
    data = os.urandom(16 * MiB)
    store.write_bytes(uri, data)
    with store.open_read(uri) as stream:
        head = stream.read(MiB)
        _break_connection(stream)
        assert head + stream.read() == data
        assert stream.raw.resumes == 1


@pytest.mark.s3
def test_a_read_never_splices_a_replaced_object(s3_server: SeaweedFS, s3_bucket: str) -> None:
    store = ObjectStore(s3_server.settings)
    uri = f"s3://{s3_bucket}/replaced.bin"
    store.write_bytes(uri, os.urandom(16 * MiB))
    with store.open_read(uri) as stream:
        stream.read(MiB)
        store.write_bytes(uri, os.urandom(16 * MiB))  # a new version meanwhile
        _break_connection(stream)
        with pytest.raises(StorageError, match=r"was replaced at .* while it was being read"):
            stream.read()


def test_the_run_configs_storage_section_reaches_every_steps_store(tmp_path) -> None:
    """`storage.*` in a run config is what the step's store retries and times out with."""
    from simclrv2.config.loading import load_config
    from simclrv2.config.run_config import RunConfig
    from simclrv2.distributed.context import shutdown_distributed
    from simclrv2.steps.step_context import start_step

    config = load_config(
        RunConfig, None, ["storage.outage_budget_s=7", "storage.read_timeout_s=11"]
    )
    store = ObjectStore()
    try:
        start_step("pretrain", config, config.pretrain.optimizer, 512, str(tmp_path), None,
                   store, print_fn=lambda *_: None)  # fmt: skip
    finally:
        shutdown_distributed()
    budget = store.settings.retry_budget
    assert (budget.outage_budget_s, budget.read_timeout_s) == (7, 11)
    assert budget.first_contact_budget_s == config.storage.first_contact_budget_s
