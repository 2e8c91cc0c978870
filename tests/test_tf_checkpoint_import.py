"""Importing official SimCLRv2 checkpoints, checked numerically: the same random weights in an
independent TensorFlow build of the official network (tests/tf_official_reference.py) and in
our imported model give the same features, projections and logits on the same images, for
ResNet-50 1x without and with SK (ResNet-D stem, SK convolution, TF padding), in the TF2 and
TF1 layouts; every checkpoint variable is mapped or ignored by a named rule."""

import numpy as np
import pytest
import torch

from simclrv2.models.simclr_model import Classifier, ContrastiveModel
from simclrv2.tf_import.bundle_reader import TensorBundle
from simclrv2.tf_import.checkpoint_import import CheckpointMappingError, import_checkpoint

torch_dynamo = pytest.importorskip("torch._dynamo")  # before TF: triton after TF segfaults
tf = pytest.importorskip("tensorflow")
reference = pytest.importorskip("tests.tf_official_reference")

NUM_CLASSES = 10
# 70 px: the stages see 35, 18, 9 and 5 pixels, odd and even sizes, so every padding rule
# ('SAME' max-pool, fixed padding, the ResNet-D shortcut's pooling) meets its edge cases.
IMAGE_SIZE = 70


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 1, (2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype("f4")


@pytest.fixture(scope="module", params=["r50_1x_sk0", "r50_1x_sk1"])
def official(request):
    sk = request.param.endswith("sk1")
    return request.param, reference.OfficialModel(
        depth=50, width=1, sk=sk, num_classes=NUM_CLASSES, seed=3 if sk else 4
    )


def _max_difference(ours: torch.Tensor, theirs: np.ndarray) -> float:
    return float(np.abs(ours.detach().numpy() - theirs).max())


def _assert_close(name: str, ours: torch.Tensor, theirs: np.ndarray) -> float:
    difference = _max_difference(ours, theirs)
    scale = float(np.abs(theirs).max())
    print(f"{name}: max |ours - TF| = {difference:.3g} (max |TF| = {scale:.3g})")
    assert scale > 0.1  # outputs that vanished would make any comparison pass
    assert difference <= 1e-5 * max(scale, 1.0), name
    return difference


def _accounted_for(bundle: TensorBundle, result) -> None:
    """Every variable of the checkpoint is either mapped or ignored by a rule, none twice."""
    ignored = [key for keys in result.ignored.values() for key in keys]
    assert len(ignored) == len(set(ignored))
    assert result.mapped + len(ignored) <= len(bundle.names())
    assert set(ignored) <= set(bundle.names())


@pytest.mark.slow
def test_tf2_checkpoint_gives_the_same_features_and_logits(official, images, tmp_path):
    name, model = official
    prefix = model.write_tf2(str(tmp_path / "ckpt-1"))
    expected = model.outputs(images, fine_tune_layer=1)
    bundle = TensorBundle(prefix)

    result = import_checkpoint(bundle)
    assert result.layout == "tf2"
    assert isinstance(result.model, Classifier)
    assert result.encoder.depth == 50 and result.encoder.width_multiplier == 1.0
    assert (result.encoder.sk_ratio > 0) == name.endswith("sk1")
    assert result.num_classes == NUM_CLASSES and result.num_proj_layers == 3
    assert set(result.ignored) >= {"optimizer state", "step counter"}
    _accounted_for(bundle, result)
    x = torch.from_numpy(images)
    with torch.no_grad():
        _assert_close(f"{name} TF2 features", result.model.encoder(x), expected["features"])
        _assert_close(f"{name} TF2 logits", result.model(x), expected["logits"])

    contrastive = import_checkpoint(bundle, contrastive=True).model
    assert isinstance(contrastive, ContrastiveModel)
    with torch.no_grad():
        _assert_close(f"{name} TF2 projection", contrastive(x), expected["projection"])


@pytest.mark.slow
def test_tf1_checkpoint_gives_the_same_outputs_and_its_ema_on_request(official, images, tmp_path):
    name, model = official
    variables = model.tf1_variables(ema_offset=0.5)
    prefix = reference.write_tf1(str(tmp_path / "model.ckpt-250228"), variables)
    expected = model.outputs(images, fine_tune_layer=1)
    bundle = TensorBundle(prefix)

    result = import_checkpoint(bundle)
    assert result.layout == "tf1" and (result.encoder.sk_ratio > 0) == name.endswith("sk1")
    assert {"optimizer slot", "step counter"} <= set(result.ignored)
    assert any(rule.startswith("exponential moving average") for rule in result.ignored)
    _accounted_for(bundle, result)
    x = torch.from_numpy(images)
    with torch.no_grad():
        _assert_close(f"{name} TF1 logits", result.model(x), expected["logits"])

    ema = import_checkpoint(bundle, use_ema=True)
    assert ema.used_ema
    stem = ema.model.state_dict()["encoder.stem.0.weight"]
    tf_stem = variables["base_model/conv2d/kernel"].numpy().transpose(3, 2, 0, 1)
    np.testing.assert_allclose(stem.numpy(), tf_stem + 0.5, rtol=0, atol=1e-6)
    # BN statistics have no EMA copy: they are the checkpoint's own.
    running = ema.model.state_dict()["encoder.stem.1.running_mean"]
    np.testing.assert_array_equal(
        running.numpy(), variables["base_model/batch_normalization/moving_mean"].numpy()
    )


def test_unmapped_and_misshapen_variables_are_errors_naming_them(tmp_path):
    # A ResNet-18 (basic blocks) keeps this fast and covers the other block kind's names.
    model = reference.OfficialModel(depth=18, width=1, sk=False, num_classes=None, seed=5)
    variables = model.tf1_variables(ema_offset=None)
    prefix = reference.write_tf1(str(tmp_path / "good.ckpt-1"), variables)
    result = import_checkpoint(TensorBundle(prefix))
    assert isinstance(result.model, ContrastiveModel) and result.encoder.depth == 18

    extra = dict(variables)
    extra["base_model/attention/query/kernel"] = tf.zeros([4, 4])
    prefix = reference.write_tf1(str(tmp_path / "extra.ckpt-1"), extra)
    with pytest.raises(CheckpointMappingError, match=r"'base_model/attention/query/kernel'"):
        import_checkpoint(TensorBundle(prefix))

    for name in ("head_contrastive/nl_0/dense/kernel", "base_model/conv2d_5/kernel"):
        wrong = dict(variables)
        wrong[name] = tf.zeros([*variables[name].shape[:-1], 3])
        prefix = reference.write_tf1(str(tmp_path / f"wrong{len(name)}.ckpt-1"), wrong)
        with pytest.raises(CheckpointMappingError, match=rf"'{name}' has shape"):
            import_checkpoint(TensorBundle(prefix))

    prefix = reference.write_tf1(str(tmp_path / "noema.ckpt-1"), variables)
    with pytest.raises(CheckpointMappingError, match="no exponential moving averages"):
        import_checkpoint(TensorBundle(prefix), use_ema=True)
