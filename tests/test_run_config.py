"""Run configuration: YAML + overrides, every key checked before any work starts."""

import pytest

from simclrv2.config.loading import ConfigError, dump_config, load_config, load_config_text
from simclrv2.config.run_config import RunConfig


def _write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_reference_recipes():
    config = RunConfig()
    assert config.pretrain.temperature == 0.1
    # SimCLRv2's command in the reference README, not the tf2 flag defaults (SimCLRv1's).
    assert config.pretrain.optimizer.base_learning_rate == 0.075
    assert config.pretrain.optimizer.learning_rate_scaling == "sqrt"
    assert config.pretrain.optimizer.weight_decay == 1e-4
    assert config.distill.optimizer == config.pretrain.optimizer  # the pretraining schedule
    assert config.pretrain.optimizer.trust_coefficient == 0.001
    assert config.finetune.proj_layers == 1
    assert config.finetune.optimizer.base_learning_rate == 0.005
    assert config.finetune.optimizer.weight_decay == 0.0
    assert config.model.num_proj_layers == 3 and config.model.proj_out_dim == 128
    assert config.distill.temperature == 1.0 and config.distill.alpha == 0.0


def test_yaml_then_overrides(tmp_path):
    path = _write(
        tmp_path,
        """
data:
  dataset: s3://datasets/fmnist
  image_size: 28
  image_mode: gray
model:
  encoder: {depth: 18, width_multiplier: 0.25}
pretrain:
  optimizer: {epochs: 2, batch_size: 256, learning_rate_scaling: sqrt, warmup_epochs: 0.2}
  temperature: 0.5
""",
    )
    config = load_config(
        RunConfig, path, ["pretrain.temperature=0.2", "runtime.bf16=false", "distill.alpha=1"]
    )
    assert config.data.dataset == "s3://datasets/fmnist"
    assert config.model.encoder.encoder_config(config.data).in_channels == 1
    assert config.model.encoder.encoder_config(config.data).cifar_stem is True
    assert config.pretrain.optimizer.epochs == 2
    assert config.pretrain.optimizer.base_learning_rate == 0.075  # untouched default
    assert config.pretrain.temperature == 0.2
    assert config.runtime.bf16 is False
    assert config.distill.alpha == 1.0 and isinstance(config.distill.alpha, float)
    # The effective config round-trips through its YAML dump.
    again = load_config(RunConfig, _write(tmp_path, dump_config(config)))
    assert again == config


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("pretrain:\n  temprature: 0.5\n", [],
         r"unknown setting pretrain\.temprature \(did you mean pretrain\.temperature\?\)"),
        ("", ["pretrain.optimizer.epochs=ten"],
         r"pretrain\.optimizer\.epochs: expected int, got 'ten'"),
        ("", ["pretrain.temperature=0"], r"pretrain\.temperature must be > 0"),
        ("", ["pretrain.optimizer.learning_rate_scaling=cubic"],
         r"not one of \['linear', 'sqrt'\]"),
        ("", ["finetune.proj_layers=4"],
         r"finetune\.proj_layers 4 is more than the 3 layers of the projection head"),
        ("", ["finetune.proj_layers=-2"], r"finetune\.proj_layers must be >= 0, or -1"),
        ("", ["model.encoder.depth=42"], r"ResNet depth 42 is not supported"),
        ("", ["data.image_mode=sepia"], r"data\.image_mode: 'sepia' is not one of"),
        ("", ["distill.alpha=2"], r"distill\.alpha must be in \[0, 1\]"),
        ("", ["pretrain.optimizer.warmup_epochs=200"], r"warmup_epochs \(200\.0\) exceeds epochs"),
        ("", ["runtime.channels_last=3"], r"runtime\.channels_last: expected bool, got 3"),
        ("- a list\n", [], r"must hold a mapping"),
        ("", ["justakey"], r"must look like section\.key=value"),
    ],
)  # fmt: skip
def test_bad_settings_are_rejected_with_their_key_path(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RunConfig, _write(tmp_path, text), overrides)


def test_a_partial_section_keeps_that_sections_own_defaults():
    config = load_config(RunConfig, None, ["finetune.optimizer.epochs=2"])
    assert config.finetune.optimizer.epochs == 2
    # The fine-tuning recipe, not the generic optimizer defaults (0.075 sqrt, warmup 10, 1e-4).
    assert config.finetune.optimizer.base_learning_rate == 0.005
    assert config.finetune.optimizer.warmup_epochs == 0.0
    assert config.finetune.optimizer.weight_decay == 0.0


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(RunConfig, tmp_path / "nope.yaml")


def test_scientific_notation_that_yaml_1_1_leaves_a_string_is_a_float():
    # PyYAML reads 1e-6 as the string "1e-6", and json.dumps writes 1e-12 that way: the
    # pipeline's run-config text is JSON, so a small float must survive the round trip.
    config = load_config_text(
        RunConfig, "pretrain: {optimizer: {weight_decay: 1e-6}}",
        ["distill.optimizer.base_learning_rate=1E+2", "distill.temperature=.5e-1"],
    )  # fmt: skip
    assert config.pretrain.optimizer.weight_decay == 1e-6
    assert config.distill.optimizer.base_learning_rate == 100.0
    assert config.distill.temperature == 0.05
    with pytest.raises(ConfigError, match="expected float, got '1e'"):
        load_config_text(RunConfig, "pretrain: {optimizer: {weight_decay: 1e}}")
