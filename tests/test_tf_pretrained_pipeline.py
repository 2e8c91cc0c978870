"""The pipeline's `pretrained_model`: compiled with dsl.If / dsl.Else for profiles that declare
it, and run under kfp.local from a TensorFlow checkpoint of the official layout, where the
import step replaces pretraining and fine-tuning starts from the imported network."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipelines.compiler import compile_profile, load_profile
from simclrv2.steps.model_artifact import load_model
from simclrv2.storage.object_store import ObjectStore
from tests.test_pipeline_local import CONFIG, PARAMS
from tests.tf_checkpoints import write_case

RELEASED = Path("pipelines/profiles/imagenet-released-r152x3sk.yaml")


def test_released_profile_compiles_both_branches_and_others_do_not_change(tmp_path):
    spec = next(yaml.safe_load_all(compile_profile(RELEASED, tmp_path / "r.yaml").read_text()))
    parameter = spec["root"]["inputDefinitions"]["parameters"]["pretrained_model"]
    assert parameter["defaultValue"] == "s3://mlpipeline/simclrv2/released/r152_3x_sk1"
    conditions = {}
    for component in spec["components"].values():
        for task in component.get("dag", {}).get("tasks", {}).values():
            condition = task.get("triggerPolicy", {}).get("condition", "")
            if "pretrained_model" in condition:
                conditions[task["taskInfo"]["name"]] = condition
    assert set(conditions) == {"pretrain-from-scratch", "start-from-pretrained-model"}
    names = json.dumps(spec)
    assert '"name": "import-pretrained"' in names and '"name": "pretrain"' in names
    # The released profile's retrain gate counts the model it starts from in its training key.
    gate = spec["root"]["dag"]["tasks"]["retrain-gate"]["inputs"]["parameters"]
    assert gate["pretrained_model"] == {"componentInputParameter": "pretrained_model"}
    # A profile without the parameter keeps today's pipeline: no such parameter, no import
    # step, no branch, and its retrain gate gets no model (its optional input stays unset).
    tiny_text = compile_profile(Path("pipelines/profiles/tiny.yaml"), tmp_path / "t.yaml")
    tiny = next(yaml.safe_load_all(tiny_text.read_text()))
    assert "pretrained_model" not in tiny["root"]["inputDefinitions"]["parameters"]
    assert (
        "pretrained_model"
        not in tiny["root"]["dag"]["tasks"]["retrain-gate"]["inputs"]["parameters"]
    )
    assert "import-pretrained" not in json.dumps(
        tiny
    ) and "pretrain-from-scratch" not in json.dumps(tiny)


@pytest.mark.slow
def test_kfp_local_run_skips_pretraining_and_fine_tunes_the_imported_network(tmp_path, capsys):
    from simclrv2.cli import main

    # The official layout of a network that fits the tiny pipeline (28 px grey images).
    written = write_case("grey_release", tmp_path / "tf")
    release = written / "release"

    profile = load_profile("pipelines/profiles/tiny.yaml")
    profile["steps"]["default"]["retries"] = 0
    profile["parameters"]["pretrained_model"] = ""
    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    out = tmp_path / "out"
    command = ["pipeline", "run-local", "--profile", str(profile_path), "--output", str(out)]
    for param in [*PARAMS, f"pretrained_model={release}"]:
        command += ["--param", param]
    for setting in CONFIG:
        command += ["--set", setting]
    assert main(command) == 0, capsys.readouterr().err[-2000:]

    (run_dir,) = (out / "work").iterdir()
    assert not (run_dir / "pretrain").exists()  # skipped
    imported, _ = load_model(ObjectStore(), str(run_dir / "pretrained" / "model.pt"))
    stem = np.load(written / "variables.npz")["stem_kernel"].transpose(3, 2, 0, 1)
    assert torch.equal(imported.encoder.stem[0].weight, torch.from_numpy(stem))
    teacher, metadata = load_model(ObjectStore(), str(run_dir / "finetune" / "model.pt"))
    assert metadata.get("pretrained") == str(run_dir / "pretrained" / "model.pt")
    assert teacher.encoder.config == imported.config.encoder
    for step in ("supervised", "pseudolabels", "distill", "evaluate"):
        assert (run_dir / step).is_dir(), step


def test_a_model_artifact_is_used_in_place_and_a_classifier_refused(tmp_path):
    from simclrv2.errors import UsageError
    from simclrv2.models.resnet import EncoderConfig
    from simclrv2.models.simclr_model import Classifier, ContrastiveModel, ModelConfig
    from simclrv2.steps.model_artifact import save_model
    from simclrv2.tf_import.pretrained_source import resolve_pretrained

    store = ObjectStore()
    encoder = EncoderConfig(depth=18, width_multiplier=0.125, cifar_stem=True, in_channels=1)
    pretrained = str(tmp_path / "pretrained.pt")
    save_model(store, pretrained, ContrastiveModel(ModelConfig(encoder=encoder)))
    output = str(tmp_path / "run" / "pretrained" / "model.pt")
    assert resolve_pretrained(pretrained, output, store) == pretrained
    assert not (tmp_path / "run").exists()  # nothing copied or imported

    classifier = str(tmp_path / "classifier.pt")
    save_model(store, classifier, Classifier(encoder, num_classes=10, proj_layers=1))
    with pytest.raises(UsageError, match="is a Classifier: pass a pretrained network"):
        resolve_pretrained(classifier, output, store)
