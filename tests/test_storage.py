"""The storage layer against a real S3 server (SeaweedFS) and local folders.

Checks URIs, settings, error messages, the streaming multipart writer (content, SHA-256,
memory bound, nothing published on failure) and ObjectStore round trips on both backends,
including tar streams as the data step writes them.
"""

from __future__ import annotations

import gc
import hashlib
import io
import os
import pickle
import socket
import tarfile
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from pipelines.local_seaweedfs import SeaweedFS
from simclrv2.storage.errors import ObjectNotFound, StorageError, explain_client_error
from simclrv2.storage.multipart_writer import MIN_PART_SIZE, S3MultipartWriter
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.s3_client import S3Settings, make_s3_client
from simclrv2.storage.uri import basename, is_s3_uri, join_uri, parent_uri, split_s3_uri

MiB = 1024 * 1024


def _random_bytes(size: int, seed: int = 0) -> bytes:
    # Incompressible and reproducible; os.urandom would do but a seed helps when debugging.
    import random

    return random.Random(seed).randbytes(size)


def _record_operations(client: Any) -> list[str]:
    """Names of the S3 API operations the client calls from now on (botocore events)."""
    operations: list[str] = []

    def record(model: Any, **_: Any) -> None:
        operations.append(model.name)

    client.meta.events.register("before-call.s3", record)
    return operations


def _closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _client_error(code: str, operation: str, status: int) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)  # type: ignore[arg-type]


# URIs ------------------------------------------------------------------------------------


def test_is_and_split_s3_uri() -> None:
    assert is_s3_uri("s3://bucket/key") and not is_s3_uri("/data/s3/x")
    assert split_s3_uri("s3://bucket/a/b.tar") == ("bucket", "a/b.tar")
    assert split_s3_uri("s3://bucket") == ("bucket", "")
    assert split_s3_uri("s3://bucket/") == ("bucket", "")


@pytest.mark.parametrize("uri", ["s3://", "s3:///key", "s3://bad bucket/k", "/local/path"])
def test_split_s3_uri_rejects_malformed(uri: str) -> None:
    with pytest.raises(ValueError, match=r"s3://bucket/key"):
        split_s3_uri(uri)


def test_join_parent_basename() -> None:
    assert join_uri("s3://b/data/", "/shards/", "x.tar") == "s3://b/data/shards/x.tar"
    assert join_uri("s3://b", "x.tar") == "s3://b/x.tar"
    assert join_uri("s3://b/", "", "x.tar") == "s3://b/x.tar"
    assert join_uri("/tmp/run/", "a", "b.json") == "/tmp/run/a/b.json"
    assert join_uri("/", "a") == "/a"
    assert join_uri("rel", "a/") == "rel/a"
    assert join_uri("s3://b/p") == "s3://b/p"
    assert parent_uri("s3://b/a/x.tar") == "s3://b/a"
    assert parent_uri("s3://b/x.tar") == "s3://b"
    assert parent_uri("s3://b") == "s3://b"
    assert parent_uri("/tmp/a/x.tar") == "/tmp/a"
    assert parent_uri("/tmp/a/") == "/tmp"
    assert basename("s3://b/a/x.tar") == "x.tar"
    assert basename("s3://b/a/") == "a"
    assert basename("s3://b") == ""
    assert basename("/tmp/a/x.tar") == "x.tar"


# Settings and client -----------------------------------------------------------------------


def test_settings_from_env_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:8333")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY0123456789")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    from_env = S3Settings.from_env()
    assert from_env == S3Settings("http://env:8333", "ENVKEY0123456789", "env-secret", "eu-west-1")
    flags = S3Settings.from_env(endpoint_url="http://flag:9000", secret_access_key="flag-secret")
    assert flags.endpoint_url == "http://flag:9000"
    assert flags.secret_access_key == "flag-secret"
    assert flags.access_key_id == "ENVKEY0123456789"  # not overridden: from the environment
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert S3Settings.from_env().region is None


def test_settings_repr_hides_the_secret() -> None:
    settings = S3Settings("http://s3:8333", "AKIAEXAMPLEKEY1234", "very-secret-value", None)
    for text in (repr(settings), str(settings), f"{settings}"):
        assert "very-secret-value" not in text
        assert "AKIAEXAMPLEKEY1234" not in text
        assert "1234" in text  # the key's tail tells which key it is
    assert "very-secret-value" not in repr(ObjectStore(settings))


def test_make_s3_client_config() -> None:
    client = make_s3_client(S3Settings("http://127.0.0.1:1", "key", "secret"))
    config = client.meta.config
    assert client.meta.region_name == "us-east-1"
    assert config.s3["addressing_style"] == "path"
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert config.signature_version == "s3v4"
    with pytest.raises(StorageError, match="AWS_SECRET_ACCESS_KEY"):
        make_s3_client(S3Settings("http://127.0.0.1:1", "key-without-secret", None))


# Error messages (no server needed) ---------------------------------------------------------


def test_explain_client_error_messages() -> None:
    endpoint = "http://s3.local:8333"
    no_bucket = explain_client_error(_client_error("404", "HeadBucket", 404), "s3://nob", endpoint)
    assert "'nob' does not exist at http://s3.local:8333" in str(no_bucket)
    refused = explain_client_error(
        _client_error("SignatureDoesNotMatch", "GetObject", 403), "s3://b/k", endpoint
    )
    assert "refused the credentials" in str(refused) and "AWS_ACCESS_KEY_ID" in str(refused)
    missing = explain_client_error(_client_error("NoSuchKey", "GetObject", 404), "s3://b/k", None)
    assert isinstance(missing, ObjectNotFound) and isinstance(missing, FileNotFoundError)
    unreachable = explain_client_error(
        EndpointConnectionError(endpoint_url=endpoint), "s3://b/k", endpoint
    )
    assert "cannot reach S3 endpoint http://s3.local:8333" in str(unreachable)
    no_keys = explain_client_error(NoCredentialsError(), "s3://b/k", None)
    assert "AWS_SECRET_ACCESS_KEY" in str(no_keys)
    hidden = explain_client_error(
        _client_error("500", "PutObject", 500), "s3://b/k", "http://user:pw@s3.local:8333"
    )
    assert "pw" not in str(hidden) and "s3.local:8333" in str(hidden)


def test_unreachable_endpoint_is_explained_quickly() -> None:
    endpoint = f"http://127.0.0.1:{_closed_loopback_port()}"
    store = ObjectStore(
        S3Settings(endpoint, "key", "secret"),
        client_factory=lambda s: make_s3_client(s, max_attempts=2, connect_timeout_s=1),
    )
    started = time.monotonic()
    with pytest.raises(StorageError, match=f"cannot reach S3 endpoint {endpoint}"):
        store.check_bucket("s3://bucket/prefix")
    assert time.monotonic() - started < 10


# The multipart writer ---------------------------------------------------------------------


@pytest.mark.s3
def test_multipart_writer_streams_parts(s3_server: SeaweedFS, s3_bucket: str) -> None:
    client = s3_server.client()
    operations = _record_operations(client)
    data = _random_bytes(12 * MiB + 12345)
    uri = f"s3://{s3_bucket}/shards/big.tar"
    with S3MultipartWriter(client, uri, part_size=MIN_PART_SIZE) as writer:
        start = 0
        for size in [1, 100_000, 3 * MiB, 7 * MiB, 17, 2 * MiB]:
            writer.write(data[start : start + size])
            start += size
        writer.write(memoryview(data)[start:])
        assert writer.bytes_written == len(data)
        # The part in memory never outgrows part_size, whatever the chunk sizes.
        assert writer.peak_buffered_bytes == MIN_PART_SIZE
    assert writer.published and writer.closed
    assert operations == ["CreateMultipartUpload"] + ["UploadPart"] * 3 + [
        "CompleteMultipartUpload"
    ]
    assert writer.sha256_hex() == hashlib.sha256(data).hexdigest()
    stored = client.get_object(Bucket=s3_bucket, Key="shards/big.tar")["Body"].read()
    assert stored == data


@pytest.mark.s3
def test_small_object_is_one_put(s3_server: SeaweedFS, s3_bucket: str) -> None:
    client = s3_server.client()
    operations = _record_operations(client)
    with S3MultipartWriter(client, f"s3://{s3_bucket}/small.json", part_size=MIN_PART_SIZE) as w:
        w.write(b'{"shards": ')
        w.write(b"3}")
    assert operations == ["PutObject"]
    assert client.get_object(Bucket=s3_bucket, Key="small.json")["Body"].read() == b'{"shards": 3}'
    assert w.sha256_hex() == hashlib.sha256(b'{"shards": 3}').hexdigest()
    with pytest.raises(ValueError, match="closed"):
        w.write(b"more")


@pytest.mark.s3
def test_failure_inside_with_publishes_nothing(s3_server: SeaweedFS, s3_bucket: str) -> None:
    client = s3_server.client()
    uri = f"s3://{s3_bucket}/broken.tar"
    writer = S3MultipartWriter(client, uri, part_size=MIN_PART_SIZE)
    with pytest.raises(RuntimeError, match="boom"), writer:
        writer.write(_random_bytes(6 * MiB))  # one part is already on the server
        assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
        raise RuntimeError("boom")
    assert not writer.published
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=s3_bucket).get("Contents", []) == []


@pytest.mark.s3
def test_abort_before_any_part(s3_server: SeaweedFS, s3_bucket: str) -> None:
    client = s3_server.client()
    writer = S3MultipartWriter(client, f"s3://{s3_bucket}/never.bin")
    writer.write(b"abc")
    writer.abort()
    writer.close()  # no-op after abort: must not publish
    assert client.list_objects_v2(Bucket=s3_bucket).get("Contents", []) == []


@pytest.mark.s3
def test_forgotten_writer_is_aborted_not_published(s3_server: SeaweedFS, s3_bucket: str) -> None:
    client = s3_server.client()
    writer = S3MultipartWriter(client, f"s3://{s3_bucket}/forgotten.tar", part_size=MIN_PART_SIZE)
    writer.write(_random_bytes(6 * MiB))
    with pytest.warns(ResourceWarning, match="never closed"):
        del writer
        gc.collect()
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=s3_bucket).get("Contents", []) == []


# ObjectStore on both backends ---------------------------------------------------------------


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store_and_root(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[Any, str]]:
    """(store, root URI) for a local folder and for a fresh S3 bucket."""
    if request.param == "local":
        yield ObjectStore(), str(tmp_path / "store")
        return
    server: SeaweedFS = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    yield ObjectStore(server.settings, part_size=MIN_PART_SIZE), f"s3://{bucket}/root"


def test_store_round_trip(store_and_root: tuple[ObjectStore, str]) -> None:
    store, root = store_and_root
    store.write_bytes(join_uri(root, "data", "b.bin"), b"bee")
    store.write_bytes(join_uri(root, "data", "a", "x.bin"), b"ex" * 1000)
    store.write_bytes(join_uri(root, "data-old", "z.bin"), b"zed")
    a_uri = join_uri(root, "data", "a", "x.bin")
    assert store.read_bytes(a_uri) == b"ex" * 1000
    assert store.exists(a_uri) and store.size(a_uri) == 2000
    assert not store.exists(join_uri(root, "data"))  # a folder is not a file
    assert store.list_files(join_uri(root, "data")) == [
        (a_uri, 2000),
        (join_uri(root, "data", "b.bin"), 3),
    ]
    assert store.list_files(join_uri(root, "nothing-here")) == []
    store.write_bytes(a_uri, b"replaced")
    with store.open_read(a_uri) as stream:
        assert stream.read() == b"replaced"
    store.delete(a_uri)
    store.delete(a_uri)  # deleting twice is fine
    assert not store.exists(a_uri)
    with pytest.raises(ObjectNotFound):
        store.read_bytes(a_uri)
    with pytest.raises(FileNotFoundError):
        store.size(a_uri)
    store.check_bucket(root)


def test_store_write_is_atomic(store_and_root: tuple[ObjectStore, str]) -> None:
    store, root = store_and_root
    uri = join_uri(root, "out", "shard-000000.tar")
    with pytest.raises(RuntimeError, match="interrupted"), store.open_write(uri) as stream:
        stream.write(_random_bytes(6 * MiB))
        raise RuntimeError("interrupted")
    assert not store.exists(uri)
    assert store.list_files(root) == []  # no temporary file or part left behind
    if not is_s3_uri(root):
        assert os.listdir(os.path.join(root, "out")) == []


def test_tar_streams_through_the_store(store_and_root: tuple[ObjectStore, str]) -> None:
    store, root = store_and_root
    uri = join_uri(root, "shards", "shard-000000.tar")
    members = {f"{i:06d}.png": _random_bytes(300_000 + i, seed=i) for i in range(20)}
    with store.open_write(uri) as stream, tarfile.open(fileobj=stream, mode="w|") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    written_sha256 = stream.sha256_hex()
    assert stream.bytes_written == store.size(uri)
    raw = store.read_bytes(uri)
    assert hashlib.sha256(raw).hexdigest() == written_sha256
    with store.open_read(uri) as source, tarfile.open(fileobj=source, mode="r|") as tar:
        read_back = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    assert read_back == members


def test_webdataset_tarwriter_into_the_store(store_and_root: tuple[ObjectStore, str]) -> None:
    webdataset = pytest.importorskip("webdataset")
    store, root = store_and_root
    uri = join_uri(root, "wds", "shard-000000.tar")
    with store.open_write(uri) as stream:
        writer = webdataset.TarWriter(stream)
        for i in range(3):
            writer.write({"__key__": f"{i:06d}", "cls": str(i).encode(), "png": b"\x89PNG" * i})
        writer.close()
    with tarfile.open(fileobj=io.BytesIO(store.read_bytes(uri)), mode="r:") as tar:
        assert tar.getnames() == [f"{i:06d}.{ext}" for i in range(3) for ext in ("cls", "png")]


def test_store_pickles_without_its_client() -> None:
    store = ObjectStore(S3Settings("http://127.0.0.1:1", "key", "secret"), part_size=6 * MiB)
    assert store.client is store.client  # created once
    copy = pickle.loads(pickle.dumps(store))  # as a DataLoader worker receives it
    assert copy.settings == store.settings and copy.part_size == 6 * MiB
    assert copy.client is not store.client


# Errors against the real server -----------------------------------------------------------


@pytest.mark.s3
def test_unknown_bucket_is_explained(s3_server: SeaweedFS) -> None:
    store = ObjectStore(s3_server.settings)
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-7' does not exist"):
        store.check_bucket("s3://no-such-bucket-7/shards")
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-7' does not exist"):
        store.write_bytes("s3://no-such-bucket-7/shards/x.json", b"{}")
    big = "s3://no-such-bucket-7/big.tar"
    with pytest.raises(StorageError, match=r"does not exist"), store.open_write(big) as stream:
        stream.write(_random_bytes(9 * MiB))  # fails at CreateMultipartUpload


@pytest.mark.s3
def test_wrong_secret_is_explained_without_leaking(s3_server: SeaweedFS, s3_bucket: str) -> None:
    wrong_secret = "wrong-secret-do-not-print-0123456789"
    settings = S3Settings(s3_server.endpoint_url, s3_server.access_key_id, wrong_secret)
    store = ObjectStore(settings)
    for action in (
        lambda: store.check_bucket(f"s3://{s3_bucket}/x"),
        lambda: store.read_bytes(f"s3://{s3_bucket}/x"),
        lambda: store.write_bytes(f"s3://{s3_bucket}/x", b"data"),
    ):
        with pytest.raises(StorageError) as caught:
            action()
        message = str(caught.value)
        assert "refused the credentials" in message
        assert "AWS_ACCESS_KEY_ID" in message and "AWS_SECRET_ACCESS_KEY" in message
        full_traceback = "".join(traceback.format_exception(caught.value))
        assert wrong_secret not in full_traceback
        assert s3_server.secret_access_key not in full_traceback
    unknown_key = ObjectStore(S3Settings(s3_server.endpoint_url, "NOSUCHKEY123", wrong_secret))
    with pytest.raises(StorageError, match="InvalidAccessKeyId"):
        unknown_key.read_bytes(f"s3://{s3_bucket}/x")


@pytest.mark.s3
def test_missing_key_is_object_not_found(s3_server: SeaweedFS, s3_bucket: str) -> None:
    store = ObjectStore(s3_server.settings)
    uri = f"s3://{s3_bucket}/missing/manifest.json"
    with pytest.raises(ObjectNotFound, match=f"no object at '{uri}'"):
        store.read_bytes(uri)
    with pytest.raises(FileNotFoundError):
        store.size(uri)
    assert not store.exists(uri)


@pytest.mark.s3
def test_client_is_created_lazily_and_once(
    s3_server: SeaweedFS, s3_bucket: str, tmp_path: Any
) -> None:
    created: list[S3Settings | None] = []

    def factory(settings: S3Settings | None) -> Any:
        created.append(settings)
        return make_s3_client(settings)

    store = ObjectStore(s3_server.settings, client_factory=factory)
    store.write_bytes(str(tmp_path / "local.bin"), b"local")
    assert store.read_bytes(str(tmp_path / "local.bin")) == b"local"
    assert created == []  # local paths never need S3
    store.write_bytes(f"s3://{s3_bucket}/a", b"1")
    store.write_bytes(f"s3://{s3_bucket}/b", b"2")
    assert created == [s3_server.settings]
    store.create_bucket(s3_bucket)  # already owned: no error
