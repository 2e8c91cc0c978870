"""Importing official SimCLRv2 checkpoints, checked numerically: the same random weights in an
independent TensorFlow build of the official network (tests/tf_official_reference.py, run in
a child process) and in our imported model give the same features, projections and logits on
the same images, for ResNet-50 1x without and with SK (ResNet-D stem, SK convolution, TF
padding), in the TF2 and TF1 layouts; every checkpoint variable is mapped or ignored by a
named rule; unmapped or misshapen variables are errors that name them."""

import numpy as np
import pytest
import torch

from simclrv2.models.simclr_model import Classifier, ContrastiveModel
from simclrv2.tf_import.bundle_reader import TensorBundle
from simclrv2.tf_import.checkpoint_files import local_prefix
from simclrv2.tf_import.checkpoint_import import CheckpointMappingError, import_checkpoint
from tests.tf_checkpoints import write_case

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    return write_case("r50", tmp_path_factory.mktemp("tf-r50"))


def _assert_close(name: str, ours: torch.Tensor, theirs: np.ndarray) -> None:
    difference = float(np.abs(ours.detach().numpy() - theirs).max())
    scale = float(np.abs(theirs).max())
    print(f"{name}: max |ours - TF| = {difference:.3g} (max |TF| = {scale:.3g})")
    assert scale > 0.1  # outputs that vanished would make any comparison pass
    assert difference <= 1e-5 * max(scale, 1.0), name


def _accounted_for(bundle: TensorBundle, result) -> None:
    """Every ignored variable exists and is ignored once; together with the mapped ones
    they are every variable of the checkpoint (the importer refuses the rest)."""
    ignored = [key for keys in result.ignored.values() for key in keys]
    assert len(ignored) == len(set(ignored))
    assert set(ignored) <= set(bundle.names())
    assert result.mapped + len(ignored) <= len(bundle.names())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["r50_1x_sk0", "r50_1x_sk1"])
def test_tf2_checkpoint_gives_the_same_features_and_logits(r50, name):
    expected = np.load(r50 / name / "outputs.npz")
    bundle = TensorBundle(str(r50 / name / "tf2" / "ckpt-1"))

    result = import_checkpoint(bundle)
    assert result.layout == "tf2"
    assert isinstance(result.model, Classifier)
    assert result.encoder.depth == 50 and result.encoder.width_multiplier == 1.0
    assert (result.encoder.sk_ratio > 0) == name.endswith("sk1")
    assert result.num_classes == NUM_CLASSES and result.num_proj_layers == 3
    assert {"optimizer state", "step counter"} <= set(result.ignored)
    _accounted_for(bundle, result)
    x = torch.from_numpy(expected["images"])
    with torch.no_grad():
        _assert_close(f"{name} TF2 features", result.model.encoder(x), expected["features"])
        _assert_close(f"{name} TF2 logits", result.model(x), expected["logits"])

    contrastive = import_checkpoint(bundle, contrastive=True).model
    assert isinstance(contrastive, ContrastiveModel)
    with torch.no_grad():
        _assert_close(f"{name} TF2 projection", contrastive(x), expected["projection"])


@pytest.mark.parametrize("name", ["r50_1x_sk0", "r50_1x_sk1"])
def test_tf1_checkpoint_gives_the_same_outputs_and_its_ema_on_request(r50, name):
    expected = np.load(r50 / name / "outputs.npz")
    variables = np.load(r50 / name / "variables.npz")
    bundle = TensorBundle(str(r50 / name / "tf1" / "model.ckpt-250228"))

    result = import_checkpoint(bundle)
    assert result.layout == "tf1" and (result.encoder.sk_ratio > 0) == name.endswith("sk1")
    assert {"optimizer slot", "step counter"} <= set(result.ignored)
    assert any(rule.startswith("exponential moving average") for rule in result.ignored)
    _accounted_for(bundle, result)
    with torch.no_grad():
        logits = result.model(torch.from_numpy(expected["images"]))
    _assert_close(f"{name} TF1 logits", logits, expected["logits"])

    ema = import_checkpoint(bundle, use_ema=True)
    assert ema.used_ema
    stem = ema.model.state_dict()["encoder.stem.0.weight"].numpy()
    np.testing.assert_allclose(
        stem, variables["stem_kernel"].transpose(3, 2, 0, 1) + 0.5, atol=1e-6
    )
    # BN statistics have no EMA copy: they are the checkpoint's own.
    running = ema.model.state_dict()["encoder.stem.1.running_mean"].numpy()
    np.testing.assert_array_equal(running, variables["stem_mean"])


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    """A ResNet-18 (basic blocks): fast, and the other block kind's names."""
    return write_case("r18", tmp_path_factory.mktemp("tf-r18"))


def test_unmapped_and_misshapen_variables_are_errors_naming_them(r18):
    cases = r18
    good = import_checkpoint(TensorBundle(str(cases / "good" / "model.ckpt-1")))
    assert isinstance(good.model, ContrastiveModel) and good.encoder.depth == 18

    with pytest.raises(CheckpointMappingError, match=r"'base_model/attention/query/kernel'"):
        import_checkpoint(TensorBundle(str(cases / "extra" / "model.ckpt-1")))
    for case, name in (("head", "head_contrastive/nl_0/dense/kernel"),
                       ("encoder", "base_model/conv2d_5/kernel")):  # fmt: skip
        with pytest.raises(CheckpointMappingError, match=rf"'{name}' has shape"):
            import_checkpoint(TensorBundle(str(cases / f"wrong-{case}" / "model.ckpt-1")))
    with pytest.raises(CheckpointMappingError, match="no exponential moving averages"):
        import_checkpoint(TensorBundle(str(cases / "good" / "model.ckpt-1")), use_ema=True)


@pytest.mark.slow
def test_a_savedmodel_folder_as_the_official_export_writes_it(r18):
    """Its trainable variables are stored under `trainable_variables_list/N` (the export's
    list reaches them first); the object graph leads back to their model paths."""
    cases = r18
    saved = TensorBundle(local_prefix(str(cases / "r18_1x_sk0")))
    assert any(name.startswith("trainable_variables_list/") for name in saved.names())
    result = import_checkpoint(saved)
    assert result.layout == "tf2" and result.encoder.depth == 18
    expected = np.load(cases / "outputs.npz")
    with torch.no_grad():
        projection = result.model(torch.from_numpy(expected["images"]))
    _assert_close("r18_1x_sk0 SavedModel projection", projection, expected["projection"])
