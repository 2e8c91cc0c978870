"""Scheduled retraining end to end under kfp.local, on an ImageFolder of real images
(Fashion-MNIST written as PNG and JPEG files), with every training step failing once.

Run 1 trains and promotes; run 2 on the same images trains nothing; images are added to every
class, and run 3 shards a new dataset version, trains, evaluates on the test split and
promotes only if the student beats production. Every run sets
runtime.inject_failure_at_step, so each training step exits 1 after its step-2 checkpoint on
its first attempt and the retry (set_retry, run by kfp.local with KFP_RETRY_INDEX as Argo
numbers attempts) resumes from that checkpoint.
"""

import io
import json

import pytest
import yaml
from PIL import Image

from pipelines.compiler import load_profile
from simclrv2.datasets.fashion_mnist import CLASSES, load_fashion_mnist
from simclrv2.shards.shard_dataset import read_published
from simclrv2.shards.verify import verify_dataset
from simclrv2.storage.object_store import ObjectStore

TRAIN_PER_CLASS, ADDED_PER_CLASS, TEST_PER_CLASS = 12, 4, 5
PARAMS = [
    "labels_per_class=2", "max_samples_per_shard=32", "pretrain_epochs=1",
    "pretrain_batch_size=32", "finetune_epochs=1", "distill_epochs=1", "retrain=on-new-data",
]  # fmt: skip
CONFIG = [
    "data.num_workers=0", "data.shuffle_buffer=64", "data.image_mode=rgb",
    "model.encoder.width_multiplier=0.125", "pretrain.optimizer.batch_size=32",
    "pretrain.optimizer.warmup_epochs=0.0", "finetune.optimizer.batch_size=10",
    "distill.optimizer.batch_size=32", "distill.optimizer.warmup_epochs=0.0", "runtime.bf16=false",
    # Seconds of training make weak models; these tests are about the pipeline's mechanics,
    # so the promotion gate only compares with production (its rules: test_promotion_gate.py).
    "promotion.max_below_teacher=1.0", "promotion.min_above_supervised=-1.0",
    "promotion.min_above_chance=-1.0",
    "runtime.checkpoint_every_steps=2", "runtime.inject_failure_at_step=2",
    # The tiny profile's step floors (400 / 500 / 200) size real runs; 6 steps are enough to
    # fail after the step-2 checkpoint and resume, and they cut this test from minutes.
    "pretrain.optimizer.min_steps=6", "finetune.optimizer.min_steps=6",
    "distill.optimizer.min_steps=6",
    "supervised.optimizer.epochs=1", "supervised.optimizer.batch_size=10",
    "supervised.optimizer.warmup_epochs=0.0", "supervised.optimizer.min_steps=6",
]  # fmt: skip


def _write_image_folder(root, images, labels, per_class, offset=0):
    """`per_class` images of each class from (images, labels), skipping the first `offset` of
    each class; even indices as PNG (grey), odd as JPEG (RGB), as a user's folder might be."""
    counts = dict.fromkeys(range(len(CLASSES)), 0)
    for image, label in zip(images, labels.tolist(), strict=True):
        seen = counts[label]
        counts[label] += 1
        if not offset <= seen < offset + per_class:
            continue
        folder = root / CLASSES[label].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image[0].numpy())
        if seen % 2:
            buffer = io.BytesIO()
            picture.convert("RGB").save(buffer, format="JPEG", quality=90)
            (folder / f"img{seen:04d}.jpg").write_bytes(buffer.getvalue())
        else:
            picture.save(folder / f"img{seen:04d}.png")


def _versions(data_root):
    return sorted(p.name for p in data_root.iterdir() if p.name.startswith("v-"))


@pytest.mark.slow
def test_nightly_retraining_trains_only_on_new_data_and_retries_resume(tmp_path, capsys):
    from simclrv2.cli import main

    train_images, train_labels = load_fashion_mnist("train", limit=2000)
    test_images, test_labels = load_fashion_mnist("test", limit=1000)
    source = tmp_path / "my-images"
    _write_image_folder(source / "train", train_images, train_labels, TRAIN_PER_CLASS)
    _write_image_folder(source / "val", test_images, test_labels, TEST_PER_CLASS)

    profile = load_profile("pipelines/profiles/tiny.yaml")
    profile["steps"]["default"]["retries"] = 1  # run-local retries after 1 s
    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    out = tmp_path / "out"
    command = ["pipeline", "run-local", "--profile", str(profile_path), "--output", str(out)]
    command += ["--param", f"source={source}"]
    for param in PARAMS:
        command += ["--param", param]
    for setting in CONFIG:
        command += ["--set", setting]
    production = out / "production"

    # Run 1: no production model yet; every training step fails once and resumes.
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "no production model yet" in printed
    for step in ("pretrain", "finetune", "distill"):
        assert f"[{step}] injected failure after the checkpoint of step 2" in printed, step
    assert printed.count("injected failure after the checkpoint of step 2") == 4  # + supervised
    assert printed.count("resuming from") >= 4
    (first_version,) = _versions(out / "data")
    (run1,) = (out / "work").iterdir()
    promoted = json.loads((production / "promoted.json").read_text())
    assert promoted["run_id"] == run1.name
    assert promoted["dataset_uri"] == str(out / "data" / first_version)
    assert "promoted:" in printed

    # Run 2: the same images and configuration: the gate stops the run after the shard step.
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "nothing new to train (retrain=on-new-data)" in printed
    assert "no training:" in printed and "injected failure" not in printed
    run2 = next(p for p in (out / "work").iterdir() if p != run1)
    assert sorted(p.name for p in run2.iterdir()) == ["retrain-gate"]  # nothing trained
    assert _versions(out / "data") == [first_version]
    assert json.loads((production / "promoted.json").read_text()) == promoted

    # New images in every class: a new dataset version, trained, evaluated, promoted if better.
    _write_image_folder(
        source / "train", train_images, train_labels, ADDED_PER_CLASS, offset=TRAIN_PER_CLASS
    )
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "new dataset version" in printed
    versions = _versions(out / "data")
    assert len(versions) == 2 and first_version in versions
    (second_version,) = set(versions) - {first_version}
    store = ObjectStore()
    old, new = (
        read_published(str(out / "data" / v), store) for v in (first_version, second_version)
    )
    assert old.splits["unlabeled"].samples == 10 * TRAIN_PER_CLASS  # the old version is intact
    assert new.splits["unlabeled"].samples == 10 * (TRAIN_PER_CLASS + ADDED_PER_CLASS)
    assert verify_dataset(old, store, print_fn=lambda line: None) == []
    run3 = next(p for p in (out / "work").iterdir() if p not in (run1, run2))
    metrics = json.loads((run3 / "evaluate" / "metrics.json").read_text())
    student, current = metrics["models"]["student"], metrics["models"]["production"]
    assert metrics["split"] == "test" and current["top1"] == promoted["top1"]  # same test split
    after = json.loads((production / "promoted.json").read_text())
    if student["top1"] > current["top1"]:
        assert after["run_id"] == run3.name
        assert after["dataset_uri"] == str(out / "data" / second_version)
    else:
        assert after == promoted
        rejected = json.loads(next((production / "rejected").glob("*.json")).read_text())
        assert rejected["run_id"] == run3.name and rejected["top1"] == student["top1"]
