"""The pseudolabel step and the paired (images + teacher logits) loader of distill: sidecar
shards that mirror the image shards, logits equal to the teacher's, parts, resume, ranks,
a real S3 round trip and clear errors."""

import dataclasses
import io
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from simclrv2.config.run_config import DataSettings, RunConfig, RuntimeSettings
from simclrv2.data.augmentations import eval_transform
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.models.resnet import EncoderConfig
from simclrv2.models.simclr_model import Classifier, ContrastiveModel, ModelConfig
from simclrv2.shards.manifest import SplitInfo
from simclrv2.shards.paired_loader import (
    LOGITS,
    SKIPPED,
    decode_logits,
    make_distill_loader,
    tar_samples,
)
from simclrv2.shards.shard_dataset import DatasetExistsError, ShardRequest, shard_dataset
from simclrv2.shards.verify import load_manifest, verify_dataset
from simclrv2.steps.model_artifact import save_model
from simclrv2.steps.pseudolabel import pseudolabel
from simclrv2.storage.object_store import ObjectStore
from tests.multiprocess import run_on_ranks
from tests.shard_damage import spoil_member

BATCH = 16  # 40-sample shards: chunks of 16, 16 and 8


def make_teacher(num_classes: int = 10, in_channels: int = 1, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    encoder = EncoderConfig(18, 0.125, cifar_stem=True, in_channels=in_channels)
    teacher = Classifier(encoder, num_classes, zero_init_classifier=False)
    with torch.no_grad():
        teacher.classifier.weight.mul_(100)  # logits of order 1, not 0.01
    return teacher.eval()


def make_config(dataset: str, **data) -> RunConfig:
    settings = {"image_size": 28, "image_mode": "gray", "num_workers": 2} | data
    return RunConfig(
        data=DataSettings(dataset=dataset, **settings),
        runtime=RuntimeSettings(device="cpu", bf16=False, channels_last=False),
    )


def read_samples(uri: str, store: ObjectStore | None = None) -> list[dict]:
    stream = (store or ObjectStore()).open_read(uri)
    try:
        return list(tar_samples(stream, uri))
    finally:
        stream.close()


def sidecar_logits(manifest, store=None) -> dict[str, np.ndarray]:
    return {
        sample["__key__"]: decode_logits(sample[LOGITS]).numpy()
        for shard in manifest.split("unlabeled").shards
        for sample in read_samples(shard.uri, store)
    }


def direct_logits(teacher, image_manifest, store=None, image_size=28) -> dict[str, np.ndarray]:
    """The teacher run here, in fp32, on every eval-transformed unlabeled image."""
    transform = eval_transform(image_size)
    keys, images = [], []
    for shard in image_manifest.split("unlabeled").shards:
        for sample in read_samples(shard.uri, store):
            image = Image.open(io.BytesIO(sample["png"])).convert("L")
            keys.append(sample["__key__"])
            images.append(transform(pil_to_tensor(image)))
    with torch.no_grad():
        logits = teacher(torch.stack(images)).numpy()
    return dict(zip(keys, logits, strict=True))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """120 Fashion-MNIST images in 3 image shards, a teacher, and its pseudo-labels."""
    root = tmp_path_factory.mktemp("pseudolabel")
    request = ShardRequest(
        "fashion-mnist",
        str(root / "dataset"),
        LabelSubsetSpec(per_class=2),
        max_samples_per_shard=40,
        sample_limit=120,
    )
    images = shard_dataset(request)
    teacher = make_teacher()
    save_model(ObjectStore(), str(root / "teacher.pt"), teacher)
    config = make_config(str(root / "dataset"))
    lines = []
    result = pseudolabel(
        config,
        str(root / "teacher.pt"),
        str(root / "pseudo"),
        print_fn=lines.append,
        batch_size=BATCH,
    )
    return SimpleNamespace(
        root=root, images=images, teacher=teacher, config=config, result=result, lines=lines
    )


def test_sidecars_mirror_the_image_shards_and_hold_the_teachers_logits(tiny):
    manifest = tiny.result.manifest
    image_shards = tiny.images.split("unlabeled").shards
    sidecars = manifest.split("unlabeled").shards
    assert [Path(s.uri).name for s in sidecars] == [f"pseudo-{i:05d}.tar" for i in range(3)]
    for image_shard, sidecar in zip(image_shards, sidecars, strict=True):
        image_keys = [s["__key__"] for s in read_samples(image_shard.uri)]
        samples = read_samples(sidecar.uri)
        assert [s["__key__"] for s in samples] == image_keys  # same keys, same order
        assert all(set(s) == {"__key__", "__url__", LOGITS} for s in samples)
        assert sidecar.samples == image_shard.samples == 40

    stored, expected = sidecar_logits(manifest), direct_logits(tiny.teacher, tiny.images)
    assert stored.keys() == expected.keys() and len(stored) == 120
    for key, logits in stored.items():
        assert logits.dtype == np.float32 and logits.shape == (10,)
        np.testing.assert_allclose(logits, expected[key], atol=1e-4, rtol=0)
    assert np.stack(list(stored.values())).std(axis=0).min() > 0.01  # not a constant teacher

    assert load_manifest(str(tiny.root / "pseudo")) == manifest
    assert verify_dataset(manifest, print_fn=lambda _: None) == []
    assert manifest.source == f"pseudolabel:{tiny.root / 'teacher.pt'}"
    assert manifest.class_names == tiny.images.class_names
    assert manifest.extra["image_shards"] == [s.uri for s in image_shards]
    assert manifest.extra["images"] == str(tiny.root / "dataset" / "manifest.json")
    assert manifest.extra["images_fingerprint"] == tiny.images.fingerprint
    assert manifest.extra["num_classes"] == 10 and manifest.extra["values"] == "logits"
    assert tiny.result.shards_labeled == 3 and tiny.result.shards_already_done == 0
    assert any("img/s" in line and "ETA" in line for line in tiny.lines), tiny.lines


def test_rerun_is_a_noop_and_another_teacher_never_overwrites(tiny, tmp_path):
    output = tiny.root / "pseudo"
    before = {path.name: path.stat().st_mtime_ns for path in output.rglob("*")}
    again = pseudolabel(
        tiny.config,
        str(tiny.root / "teacher.pt"),
        str(output),
        print_fn=lambda _: None,
        batch_size=BATCH,
    )
    assert again.manifest == tiny.result.manifest and again.shards_labeled == 0
    assert {path.name: path.stat().st_mtime_ns for path in output.rglob("*")} == before

    other = tmp_path / "other-teacher.pt"
    save_model(ObjectStore(), str(other), make_teacher(seed=1))
    with pytest.raises(DatasetExistsError, match="never overwritten"):
        pseudolabel(tiny.config, str(other), str(output), print_fn=lambda _: None)


def test_parts_make_the_same_sidecars_and_resume_where_they_stopped(tiny, tmp_path):
    teacher, output = str(tiny.root / "teacher.pt"), str(tmp_path / "pseudo")
    quiet = {"print_fn": lambda _: None, "batch_size": BATCH, "num_parts": 2}
    first = pseudolabel(tiny.config, teacher, output, part=0, **quiet)
    assert first.manifest is None and first.shards_labeled == 2  # shards 0 and 2
    assert not (tmp_path / "pseudo" / "manifest.json").exists()
    resumed = pseudolabel(tiny.config, teacher, output, part=0, **quiet)
    assert resumed.shards_labeled == 0 and resumed.shards_already_done == 2
    last = pseudolabel(tiny.config, teacher, output, part=1, **quiet)
    assert last.shards_labeled == 1 and last.manifest is not None  # the last part publishes
    assert [s.sha256 for s in last.manifest.split("unlabeled").shards] == [
        s.sha256 for s in tiny.result.manifest.split("unlabeled").shards
    ]
    assert last.manifest.fingerprint == tiny.result.manifest.fingerprint


def read_pairs(tiny, world_size=2, workers=2, **kwargs) -> list[list[tuple[str, np.ndarray]]]:
    """Every (key, teacher logits) each simulated rank reads in one epoch."""
    per_rank = []
    for rank in range(world_size):
        loader = make_distill_loader(
            tiny.images,
            tiny.result.manifest,
            eval_transform(28),
            batch_size=8,
            num_workers=workers,
            shuffle_buffer=16,
            seed=3,
            rank=rank,
            world_size=world_size,
            image_mode="gray",
            with_keys=True,
            **kwargs,
        )
        seen = []
        for images, logits, keys in loader:
            assert images.dtype == torch.float32 and images.shape[1:] == (1, 28, 28)
            assert logits.dtype == torch.float32 and logits.shape == (len(keys), 10)
            seen += list(zip(keys, logits.numpy(), strict=True))
        per_rank.append(seen)
    return per_rank


def test_paired_loader_gives_every_sample_once_with_its_logits(tiny):
    per_rank = read_pairs(tiny)
    keys = [key for seen in per_rank for key, _ in seen]
    assert len(keys) == 120 and len(set(keys)) == 120
    assert all(seen for seen in per_rank)  # both ranks read
    stored = sidecar_logits(tiny.result.manifest)
    for seen in per_rank:
        for key, logits in seen:
            np.testing.assert_array_equal(logits, stored[key])
    again = [[key for key, _ in seen] for seen in read_pairs(tiny)]
    assert again == [[key for key, _ in seen] for seen in per_rank]  # same (seed, rank, epoch)


def test_paired_loader_resampled_epochs_have_a_fixed_length(tiny):
    per_rank = read_pairs(tiny, workers=0, samples_per_epoch=64)
    assert [len(seen) for seen in per_rank] == [32, 32]  # 64 / 2 ranks, 4 batches of 8 each


def swapped_copy(tiny, tmp_path):
    """The pseudo-labels copied, with sidecar shards 0 and 1 swapped on disk."""
    copy = tmp_path / "pseudo"
    shutil.copytree(tiny.root / "pseudo", copy)
    os.replace(copy / "pseudo-00000.tar", copy / "swap.tar")
    os.replace(copy / "pseudo-00001.tar", copy / "pseudo-00000.tar")
    os.replace(copy / "swap.tar", copy / "pseudo-00001.tar")
    manifest = tiny.result.manifest
    shards = tuple(
        dataclasses.replace(shard, uri=str(copy / Path(shard.uri).name))
        for shard in manifest.split("unlabeled").shards
    )
    return dataclasses.replace(manifest, splits={"unlabeled": SplitInfo(shards, False)})


def test_mismatched_sidecars_and_datasets_fail_clearly(tiny, tmp_path):
    swapped = swapped_copy(tiny, tmp_path)
    loader = make_distill_loader(
        tiny.images,
        swapped,
        batch_size=8,
        num_workers=0,
        shuffle_buffer=0,
        image_mode="gray",
        check=False,
    )
    mismatch = r"sidecar shard .*pseudo-0000[01]\.tar does not match image shard .* at key "
    with pytest.raises(ValueError, match=mismatch + r".*: re-run pseudolabel"):
        list(loader)

    elsewhere = dataclasses.replace(
        tiny.result.manifest, extra=tiny.result.manifest.extra | {"images_fingerprint": "x"}
    )
    with pytest.raises(ValueError, match="made for another dataset"):
        make_distill_loader(tiny.images, elsewhere, batch_size=8)


def test_teachers_that_do_not_fit_the_dataset_are_refused(tiny, tmp_path):
    store, output = ObjectStore(), str(tmp_path / "pseudo")
    save_model(store, str(tmp_path / "five.pt"), make_teacher(num_classes=5))
    with pytest.raises(ValueError, match="predicts 5 classes but the dataset has 10"):
        pseudolabel(tiny.config, str(tmp_path / "five.pt"), output)
    encoder = EncoderConfig(18, 0.125, cifar_stem=True, in_channels=1)
    save_model(store, str(tmp_path / "pretrained.pt"), ContrastiveModel(ModelConfig(encoder)))
    with pytest.raises(ValueError, match="not a Classifier"):
        pseudolabel(tiny.config, str(tmp_path / "pretrained.pt"), output)
    assert not (tmp_path / "pseudo").exists()  # refused before writing anything


def test_undecodable_images_get_a_marker_and_are_skipped_by_the_loader(tmp_path):
    for index in range(12):
        folder = tmp_path / "images" / "train" / ("cat", "dog")[index % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10 + index, 12), (20 * index, 90, 200 - 9 * index)).save(
            folder / f"{index:02d}.png"
        )
    (tmp_path / "images" / "val").mkdir()
    shutil.copytree(tmp_path / "images" / "train" / "cat", tmp_path / "images" / "val" / "cat")
    request = ShardRequest(
        str(tmp_path / "images"),
        str(tmp_path / "dataset"),
        LabelSubsetSpec(per_class=1),
        max_samples_per_shard=5,
    )
    images = shard_dataset(request)
    spoil_member(images, "unlabeled", "dog_03.png")  # rotted after publishing
    save_model(ObjectStore(), str(tmp_path / "teacher.pt"), make_teacher(2, in_channels=3))
    config = make_config(
        str(tmp_path / "dataset"),
        image_size=16,
        image_mode="rgb",
        num_workers=0,
        max_corrupt_fraction=0.5,
    )
    result = pseudolabel(
        config,
        str(tmp_path / "teacher.pt"),
        str(tmp_path / "pseudo"),
        print_fn=lambda _: None,
        batch_size=4,
    )
    samples = [
        s for shard in result.manifest.split("unlabeled").shards for s in read_samples(shard.uri)
    ]
    skipped = [s["__key__"] for s in samples if SKIPPED in s]
    assert len(samples) == 12 and skipped == ["dog_03"]
    loader = make_distill_loader(
        images,
        result.manifest,
        eval_transform(16),
        batch_size=4,
        num_workers=0,
        image_mode="rgb",
        max_corrupt_fraction=0.5,
        with_keys=True,
    )
    keys = [key for _, _, batch in loader for key in batch]
    assert len(keys) == 11 and "dog_03" not in keys


def _pseudolabel_on_rank(rank, world_size, config, teacher, output):
    result = pseudolabel(config, teacher, output, print_fn=lambda _: None, batch_size=BATCH)
    return result.manifest, result.shards_labeled


@pytest.mark.distributed
def test_two_ranks_share_the_shards_and_rank_0_publishes(tiny, tmp_path):
    config = dataclasses.replace(
        tiny.config, data=dataclasses.replace(tiny.config.data, num_workers=0)
    )
    ranks = run_on_ranks(
        _pseudolabel_on_rank,
        2,
        tmp_path,
        config,
        str(tiny.root / "teacher.pt"),
        str(tmp_path / "pseudo"),
    )
    (manifest, labeled_0), (no_manifest, labeled_1) = ranks
    assert (labeled_0, labeled_1) == (2, 1) and no_manifest is None
    assert [s.sha256 for s in manifest.split("unlabeled").shards] == [
        s.sha256 for s in tiny.result.manifest.split("unlabeled").shards
    ]


@pytest.mark.s3
def test_s3_round_trip(s3_server, s3_bucket):
    store = ObjectStore(s3_server.settings)
    dataset, output = f"s3://{s3_bucket}/dataset", f"s3://{s3_bucket}/pseudo"
    request = ShardRequest(
        "fashion-mnist",
        dataset,
        LabelSubsetSpec(per_class=1),
        max_samples_per_shard=40,
        sample_limit=60,
    )
    images = shard_dataset(request, store)
    teacher = make_teacher()
    save_model(store, f"s3://{s3_bucket}/teacher.pt", teacher)
    result = pseudolabel(
        make_config(dataset),
        f"s3://{s3_bucket}/teacher.pt",
        output,
        store,
        print_fn=lambda _: None,
        batch_size=BATCH,
    )
    manifest = load_manifest(output, store)
    assert manifest == result.manifest
    assert [s.uri for s in manifest.split("unlabeled").shards] == [
        f"{output}/pseudo-00000.tar",
        f"{output}/pseudo-00001.tar",
    ]
    assert verify_dataset(manifest, store, print_fn=lambda _: None) == []
    expected = direct_logits(teacher, images, store)
    loader = make_distill_loader(
        images,
        manifest,
        eval_transform(28),
        batch_size=8,
        num_workers=2,
        s3_settings=s3_server.settings,
        image_mode="gray",
        with_keys=True,
    )
    seen = {}
    for _, logits, keys in loader:
        seen |= dict(zip(keys, logits.numpy(), strict=True))
    assert seen.keys() == expected.keys() and len(seen) == 60
    for key, logits in seen.items():
        np.testing.assert_allclose(logits, expected[key], atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["stored", "online"])
def test_distill_from_stored_logits_or_from_the_teacher_online(tiny, tmp_path, mode):
    """Both kinds of targets train a student; online needs no pseudo-labels at all."""
    import dataclasses
    import json

    from simclrv2.steps.distill import distill

    config = dataclasses.replace(
        tiny.config, distill=dataclasses.replace(tiny.config.distill, teacher=mode)
    )
    pseudo = str(tiny.root / "pseudo") if mode == "stored" else str(tmp_path / "nothing-here")
    lines = []
    result = distill(config, str(tmp_path / "student"), str(tiny.root / "teacher.pt"), pseudo,
                     max_steps=4, print_fn=lines.append)  # fmt: skip
    history = json.loads((tmp_path / "student" / "history.json").read_text())
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert all(0 <= r["teacher_agreement"] <= 1 for r in history)
    assert result.steps == 4
    assert any("teacher online" in line for line in lines) == (mode == "online")
