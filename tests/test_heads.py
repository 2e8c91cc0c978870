"""Projection head and the fine-tuning network built from a middle layer of it."""

import pytest
import torch
from torch import nn

from simclrv2.models.projection_head import ProjectionHead
from simclrv2.models.resnet import EncoderConfig
from simclrv2.models.simclr_model import Classifier, ContrastiveModel, ModelConfig

TINY = EncoderConfig(18, 0.25, cifar_stem=True, in_channels=1)


def test_head_layers_follow_the_reference():
    head = ProjectionHead(in_features=64, num_layers=3, out_dim=128)
    assert len(head.layers) == 3
    for layer in head.layers:
        assert layer.linear.bias is None  # BN after it provides the shift
        assert isinstance(layer.bn, nn.BatchNorm1d)
    assert [layer.linear.out_features for layer in head.layers] == [64, 64, 128]
    assert [layer.relu for layer in head.layers] == [True, True, False]
    # Hidden BNs have gamma and beta; the last has gamma only (center=False).
    assert head.layers[0].bn.bias is not None
    assert head.layers[2].bn.bias is None and head.layers[2].bn.weight is not None
    params = sum(p.numel() for p in head.parameters())
    assert params == 2 * (64 * 64 + 2 * 64) + (64 * 128 + 128)
    # Dense layers start from N(0, 0.01).
    assert head.layers[0].linear.weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_hidden_states_expose_every_layer_and_last_has_no_relu():
    torch.manual_seed(0)
    head = ProjectionHead(16, num_layers=3, out_dim=8)
    x = torch.randn(32, 16)
    states = head.hidden_states(x)
    assert [s.shape[1] for s in states] == [16, 16, 16, 8]
    torch.testing.assert_close(states[-1], head(x))
    assert states[1].min() >= 0 and states[2].min() >= 0
    assert states[3].min() < 0


def test_contrastive_model_outputs_projections():
    model = ContrastiveModel(ModelConfig(TINY, num_proj_layers=2, proj_out_dim=32))
    assert model(torch.rand(4, 1, 28, 28)).shape == (4, 32)
    assert len(model.projection_head.layers) == 2


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_fine_tune_from_layer_k_copies_weights_and_starts_uniform(k):
    torch.manual_seed(0)
    pretrained = ContrastiveModel(ModelConfig(TINY))
    with torch.no_grad():  # make every BN gamma non-trivial so copying is observable
        for p in pretrained.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    pretrained.eval()
    classifier = Classifier.from_pretrained(pretrained, num_classes=10, proj_layers=k).eval()
    assert len(classifier.projection_layers) == k
    x = torch.rand(5, 1, 28, 28)
    expected_features = pretrained.projection_head.hidden_states(pretrained.encoder(x))[k]
    torch.testing.assert_close(classifier.features(x), expected_features)
    # Zero-initialised classifier: uniform predictions, zero weights and bias.
    assert torch.all(classifier.classifier.weight == 0)
    assert torch.all(classifier(x) == 0)
    # The copy is independent of the pretrained model.
    classifier.encoder.stem[0].weight.data.zero_()
    assert pretrained.encoder.stem[0].weight.abs().sum() > 0


def test_fine_tune_layer_out_of_range_is_rejected():
    pretrained = ContrastiveModel(ModelConfig(TINY))
    with pytest.raises(ValueError, match="between 0"):
        Classifier.from_pretrained(pretrained, num_classes=10, proj_layers=4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        Classifier(TINY, num_classes=1)


def test_supervised_baseline_is_a_fresh_encoder_with_a_linear_classifier():
    model = Classifier(TINY, num_classes=10, proj_layers=0, zero_init_classifier=False)
    assert len(model.projection_layers) == 0
    assert model.classifier.in_features == model.encoder.output_dim
    assert model.classifier.weight.abs().sum() > 0
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_model_config_round_trips_through_a_dict():
    config = ModelConfig(EncoderConfig(50, 2, 0.0625), num_proj_layers=2, proj_out_dim=64)
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_fine_tuned_from_the_whole_head_saves_and_loads(tmp_path):
    """k = 3 (the reference's ft_proj_selector -1): the classifier reads the 128-d output."""
    from simclrv2.steps.model_artifact import load_model, save_model
    from simclrv2.storage.object_store import ObjectStore

    torch.manual_seed(0)
    pretrained = ContrastiveModel(ModelConfig(TINY, num_proj_layers=3, proj_out_dim=24)).eval()
    classifier = Classifier.from_pretrained(pretrained, 10, proj_layers=3).eval()
    assert classifier.classifier.in_features == 24
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(classifier.features(x), pretrained(x))
    with torch.no_grad():
        classifier.classifier.weight.normal_()
    save_model(ObjectStore(), str(tmp_path / "model.pt"), classifier)
    loaded, _ = load_model(ObjectStore(), str(tmp_path / "model.pt"))
    torch.testing.assert_close(loaded(x), classifier(x))


def test_finetune_setting_minus_one_means_the_whole_head(tmp_path):
    from simclrv2.config.loading import from_dict
    from simclrv2.config.run_config import RunConfig
    from simclrv2.steps.finetune import build_classifier
    from simclrv2.steps.model_artifact import save_model
    from simclrv2.storage.object_store import ObjectStore

    config = from_dict(RunConfig, {"model": {"encoder": {"depth": 18, "width_multiplier": 0.125}},
                                   "data": {"image_mode": "gray"},
                                   "finetune": {"proj_layers": -1}})  # fmt: skip
    pretrained = ContrastiveModel(ModelConfig(config.model.encoder.encoder_config(config.data)))
    save_model(ObjectStore(), str(tmp_path / "pretrained.pt"), pretrained)
    classifier = build_classifier(config, 10, str(tmp_path / "pretrained.pt"), ObjectStore())
    assert len(classifier.projection_layers) == 3
    assert classifier.classifier.in_features == 128
