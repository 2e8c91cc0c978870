"""The evaluate step: metrics equal an independent computation over the test shards' images;
PNGs, HTML report and metrics.json written locally and to S3; unusable models rejected."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from simclrv2.config.loading import from_dict
from simclrv2.config.run_config import RunConfig
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.models.resnet import EncoderConfig
from simclrv2.models.simclr_model import Classifier, ContrastiveModel, ModelConfig
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset
from simclrv2.shards.verify import load_manifest
from simclrv2.steps.evaluate import evaluate
from simclrv2.steps.model_artifact import save_model
from simclrv2.storage.object_store import ObjectStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEST_IMAGES = 150
ENCODER = EncoderConfig(18, 0.125, cifar_stem=True, in_channels=1)


def _config(dataset: str) -> RunConfig:
    return from_dict(
        RunConfig,
        {
            "data": {"dataset": dataset, "image_size": 28, "image_mode": "gray", "num_workers": 2},
            "runtime": {"device": "cpu", "bf16": False, "channels_last": False,
                        "log_every_steps": 1},
        },
    )  # fmt: skip


def _request(output: str) -> ShardRequest:
    return ShardRequest("fashion-mnist", output, LabelSubsetSpec(per_class=2),
                        max_samples_per_shard=50, sample_limit=TEST_IMAGES)  # fmt: skip


def _classifier(seed: int, num_classes: int = 10) -> Classifier:
    torch.manual_seed(seed)
    model = Classifier(ENCODER, num_classes, zero_init_classifier=False)
    # Untrained, yet telling images apart: random BN scales, batch statistics of random images
    # (not the initial 0/1) and a classifier with unit-scale weights.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    torch.nn.init.normal_(model.classifier.weight)
    model.train()
    with torch.no_grad():
        model(torch.rand(64, 1, 28, 28))
    return model.eval()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fmnist")
    shard_dataset(_request(str(folder)))
    return str(folder)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    store, uris = ObjectStore(), {}
    for name, seed in (("teacher", 1), ("student", 2)):
        uris[name] = str(folder / f"{name}.pt")
        save_model(store, uris[name], _classifier(seed), steps=1)
    return uris


def _test_images(dataset: str, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Every image and label of a split, read straight from the tar shards (tarfile, PIL)."""
    images, labels = [], []
    for uri in load_manifest(dataset).split(split).uris:
        with tarfile.open(uri) as tar:
            members = {member.name: tar.extractfile(member).read() for member in tar}
        for name in sorted(members):
            key, _, extension = name.rpartition(".")
            if extension != "png":
                continue
            pixels = np.asarray(Image.open(io.BytesIO(members[name])).convert("L"))
            images.append(torch.from_numpy(pixels.astype(np.float32) / 255)[None])
            labels.append(int(members[f"{key}.cls"]))
    return torch.stack(images), torch.tensor(labels)


def _expected_metrics(model: Classifier, images, labels, num_classes: int) -> dict:
    """Top-1/top-5, per-class accuracy and confusion matrix, counted one image at a time."""
    with torch.no_grad():
        logits = model(images).numpy()
    matrix = [[0] * num_classes for _ in range(num_classes)]
    top1 = top5 = 0
    for row, label in zip(logits, labels.tolist(), strict=True):
        ranked = sorted(range(num_classes), key=lambda c: -row[c])
        matrix[label][ranked[0]] += 1
        top1 += ranked[0] == label
        top5 += label in ranked[:5]
    per_class = [matrix[c][c] / max(1, sum(matrix[c])) for c in range(num_classes)]
    return {"top1": top1 / len(labels), "top5": top5 / len(labels), "matrix": matrix,
            "per_class": per_class}  # fmt: skip


def test_metrics_match_an_independent_computation(dataset, artifacts, tmp_path):
    output = tmp_path / "eval"
    lines = []
    metrics = evaluate(_config(dataset), artifacts, str(output), print_fn=lines.append)

    manifest = load_manifest(dataset)
    class_names = list(manifest.class_names)
    assert metrics["class_names"] == class_names
    assert metrics["dataset"] == dataset
    assert list(metrics["models"]) == ["teacher", "student"]
    images, labels = _test_images(dataset)
    assert len(labels) == TEST_IMAGES
    for name, seed in (("teacher", 1), ("student", 2)):
        got = metrics["models"][name]
        expected = _expected_metrics(_classifier(seed), images, labels, len(class_names))
        assert got["uri"] == artifacts[name]
        assert got["num_examples"] == TEST_IMAGES
        assert got["confusion_matrix"] == expected["matrix"]
        assert sum(map(sum, got["confusion_matrix"])) == TEST_IMAGES
        assert got["top1"] == pytest.approx(expected["top1"])
        assert got["top5"] == pytest.approx(expected["top5"])
        assert got["per_class_accuracy"] == pytest.approx(
            dict(zip(class_names, expected["per_class"], strict=True))
        )
        assert len(set(np.argmax(got["confusion_matrix"], axis=1))) > 1  # not one constant guess
    assert metrics["models"]["teacher"] != metrics["models"]["student"]

    assert json.loads((output / "metrics.json").read_text()) == metrics
    for png in ("accuracy.png", "teacher_confusion_matrix.png", "student_confusion_matrix.png"):
        data = (output / png).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert Image.open(io.BytesIO(data)).size[0] > 100
    report = (output / "report.html").read_text()
    assert "teacher" in report and "student" in report
    assert report.count('<img src="data:image/png;base64,') == 3
    table = "\n".join(lines)
    assert "top-1" in table and "teacher" in table and f"{TEST_IMAGES:>9}" in table


def test_contrastive_model_is_rejected(dataset, artifacts, tmp_path):
    uri = str(tmp_path / "pretrained.pt")
    save_model(ObjectStore(), uri, ContrastiveModel(ModelConfig(ENCODER)))
    models = {"teacher": artifacts["teacher"], "pretrained": uri}
    with pytest.raises(ValueError, match=r"contrastive .* fine-tune it first"):
        evaluate(_config(dataset), models, str(tmp_path / "eval"), print_fn=lambda *_: None)
    assert not (tmp_path / "eval").exists()  # checked before any work


def test_class_count_mismatch_is_rejected(dataset, tmp_path):
    uri = str(tmp_path / "five.pt")
    save_model(ObjectStore(), uri, _classifier(3, num_classes=5))
    with pytest.raises(ValueError, match="predicts 5 classes but the test set has 10"):
        evaluate(_config(dataset), {"other": uri}, str(tmp_path / "eval"), print_fn=lambda *_: None)


@pytest.mark.s3
def test_dataset_and_outputs_on_s3(s3_server, s3_bucket, artifacts):
    store = ObjectStore(s3_server.settings)
    dataset = f"s3://{s3_bucket}/fmnist"
    shard_dataset(_request(dataset), store)
    output = f"s3://{s3_bucket}/eval"
    models = {"student": artifacts["student"]}
    metrics = evaluate(_config(dataset), models, output, store, print_fn=lambda *_: None)

    assert metrics["models"]["student"]["num_examples"] == TEST_IMAGES
    names = {uri.rpartition("/")[2] for uri, _ in store.list_files(output)}
    assert names == {
        "metrics.json", "report.html", "config.yaml", "accuracy.png",
        "student_confusion_matrix.png",
    }  # fmt: skip
    assert json.loads(store.read_bytes(f"{output}/metrics.json")) == metrics
    assert store.read_bytes(f"{output}/accuracy.png").startswith(PNG_SIGNATURE)
    assert b"data:image/png;base64," in store.read_bytes(f"{output}/report.html")


def test_pretrained_encoder_gets_linear_and_knn_evaluation(dataset, artifacts, tmp_path):
    from simclrv2.evaluation.knn import knn_accuracy

    torch.manual_seed(4)
    pretrained = ContrastiveModel(ModelConfig(ENCODER)).eval()
    uri = str(tmp_path / "pretrained.pt")
    save_model(ObjectStore(), uri, pretrained)
    output = tmp_path / "eval"
    lines = []
    metrics = evaluate(_config(dataset), artifacts, str(output), print_fn=lines.append,
                       pretrained=uri)  # fmt: skip
    found = metrics["representation"]
    assert found["uri"] == uri and 0 <= found["linear_top1"] <= 1
    # kNN on features computed here, image by image from the tar files, gives the same.
    train, train_labels = _test_images(dataset, "labeled")
    test, test_labels = _test_images(dataset, "test")
    with torch.no_grad():
        expected = knn_accuracy(pretrained.encoder(train), train_labels,
                                pretrained.encoder(test), test_labels, 10)  # fmt: skip
    assert found["knn_top1"] == pytest.approx(expected, abs=1 / TEST_IMAGES)
    assert found["labeled_images"] == len(train_labels)
    assert "Pretrained encoder, frozen" in (output / "report.html").read_text()
    assert any("pretrained (linear, frozen)" in line for line in lines)
    with pytest.raises(ValueError, match="not a pretrain output"):
        evaluate(_config(dataset), artifacts, str(tmp_path / "again"), print_fn=lambda *_: None,
                 pretrained=artifacts["teacher"])  # fmt: skip
    assert not (tmp_path / "again").exists()  # checked before any work
