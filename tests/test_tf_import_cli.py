"""`simclrv2 import-tf` end to end: a TF1 release layout uploaded to a real S3 server
(SeaweedFS), imported by the command line, loaded back as our model artifact from S3 and
compared with TensorFlow's own outputs; a folder with no checkpoint is one usage error and
writes nothing."""

import numpy as np
import pytest
import torch

from simclrv2.cli.main import main
from simclrv2.errors import USAGE_EXIT
from simclrv2.models.simclr_model import ContrastiveModel
from simclrv2.steps.model_artifact import load_model
from simclrv2.storage.object_store import ObjectStore
from tests.tf_checkpoints import write_case


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    return ObjectStore(s3_server.settings)


@pytest.mark.s3
@pytest.mark.slow
def test_import_tf_from_s3_writes_a_model_that_computes_what_tf_does(
    s3_env, s3_bucket, tmp_path, capsys
):
    written = write_case("r18_sk_release", tmp_path / "tf")
    release = written / "r18_1x_sk1"
    for path in release.iterdir():  # the release folder's layout, on S3
        s3_env.write_bytes(f"s3://{s3_bucket}/releases/r18_1x_sk1/{path.name}", path.read_bytes())

    output = f"s3://{s3_bucket}/models/r18_1x_sk1.pt"
    code = main(["import-tf", f"s3://{s3_bucket}/releases/r18_1x_sk1", "--output", output, "--ema"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "ResNet-18 1x + SK" in printed and "(EMA weights)" in printed

    imported, metadata = load_model(s3_env, output)
    assert isinstance(imported, ContrastiveModel)
    assert metadata["layout"] == "tf1" and metadata["ema"] is True
    expected = np.load(written / "ema_outputs.npz")
    with torch.no_grad():
        ours = imported(torch.from_numpy(expected["images"])).numpy()
    scale = np.abs(expected["projection"]).max()
    assert scale > 0.1
    np.testing.assert_allclose(ours, expected["projection"], rtol=0, atol=1e-5 * scale)


def test_import_tf_of_a_folder_without_checkpoint_is_one_usage_error(tmp_path, capsys):
    (tmp_path / "hub").mkdir()
    output = tmp_path / "model.pt"
    code = main(["import-tf", str(tmp_path), "--output", str(output)])
    error = capsys.readouterr().err
    assert code == USAGE_EXIT
    assert error.count("\n") == 1 and "holds no TensorFlow checkpoint" in error
    assert not output.exists()
