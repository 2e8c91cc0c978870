"""The shard step and the streaming loader, end to end against a real S3 (SeaweedFS) and
local folders, on real Fashion-MNIST and on generated ImageFolder trees."""

import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from simclrv2.data.augmentations import TwoViews, eval_transform, pretrain_transform
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.shards.loader import CorruptDataError, make_shard_loader
from simclrv2.shards.shard_dataset import (
    DatasetExistsError,
    ShardRequest,
    make_plan,
    publish,
    read_published,
    shard_dataset,
    write_part,
)
from simclrv2.shards.verify import load_manifest, verify_dataset
from simclrv2.storage.errors import StorageError
from simclrv2.storage.object_store import ObjectStore
from tests.shard_damage import spoil_member

CLASSES = ("cat", "dog", "fox")


def make_image_folder(root: Path, per_class: int = 8, test_per_class: int = 3) -> Path:
    """train/<class>/ and val/<class>/ with JPEG and PNG images of distinct content."""
    for split, count in (("train", per_class), ("val", test_per_class)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                color = (40 * label + 5 * i, 255 - 20 * i, 17 * label)
                image = Image.new("RGB", (20 + i, 16), color)
                extension = "png" if i % 2 else "jpg"
                image.save(folder / f"{name}_{i}.{extension}")
    return root


def tar_members(uri: str) -> dict[str, bytes]:
    with tarfile.open(uri) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def all_keys(manifest, split):
    keys = []
    for shard in manifest.split(split).shards:
        keys += sorted({name.split(".")[0] for name in tar_members(shard.uri)})
    return keys


def read_all(manifest, split, store_settings=None, world_size=2, workers=2, **kwargs):
    """Every (key, label) each simulated rank reads in one epoch."""
    per_rank = []
    for rank in range(world_size):
        loader = make_shard_loader(
            manifest,
            split,
            batch_size=4,
            num_workers=workers,
            s3_settings=store_settings,
            rank=rank,
            world_size=world_size,
            with_keys=True,
            image_mode="gray",
            **kwargs,
        )
        seen = []
        for images, labels, keys in loader:
            assert images.dtype == torch.uint8 and images.shape[1:] == (1, 28, 28)
            seen += list(zip(keys, labels.tolist(), strict=True))
        per_rank.append(seen)
    return per_rank


@pytest.mark.s3
def test_fashion_mnist_to_s3_every_sample_once_per_epoch(s3_server, s3_bucket):
    store = ObjectStore(s3_server.settings)
    output = f"s3://{s3_bucket}/fmnist"
    request = ShardRequest(
        source="fashion-mnist",
        output=output,
        label_subset=LabelSubsetSpec(fraction=0.05, seed=1),
        max_samples_per_shard=64,
        sample_limit=600,
    )
    manifest = shard_dataset(request, store)
    assert manifest.split("unlabeled").samples == 600
    assert manifest.split("test").samples == 600
    assert manifest.split("labeled").samples == 30
    assert len(manifest.split("unlabeled").shards) == 10  # ceil(600 / 64)
    assert all(s.uri.startswith(output + "/") for s in manifest.split("test").shards)
    assert store.exists(f"{output}/manifest.json")

    for split, expected in (("unlabeled", 600), ("labeled", 30), ("test", 600)):
        per_rank = read_all(manifest, split, s3_server.settings)
        keys = [key for seen in per_rank for key, _ in seen]
        assert len(keys) == expected and len(set(keys)) == expected, split
        labels = [label for seen in per_rank for _, label in seen]
        if split == "unlabeled":
            assert set(labels) == {-1}  # labels withheld
        else:
            assert set(labels) <= set(range(10))
    labeled = [
        label for seen in read_all(manifest, "labeled", s3_server.settings) for _, label in seen
    ]
    assert Counter(labels_ := labeled) == Counter({c: 3 for c in range(10)}), labels_
    assert verify_dataset(load_manifest(output, store), store, print_fn=lambda _: None) == []


@pytest.mark.s3
def test_second_epoch_reads_everything_again_in_another_order(s3_server, s3_bucket):
    store = ObjectStore(s3_server.settings)
    manifest = shard_dataset(
        ShardRequest("fashion-mnist", f"s3://{s3_bucket}/e", max_samples_per_shard=20,
                     sample_limit=100),
        store,
    )  # fmt: skip
    loader = make_shard_loader(
        manifest, "test", batch_size=10, num_workers=2, s3_settings=s3_server.settings,
        shuffle_buffer=50, with_keys=True,
    )  # fmt: skip
    epochs = [[k for _, _, keys in loader for k in keys] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and len(set(epochs[0])) == 100
    assert epochs[0] != epochs[1]


def test_image_folder_to_local_folder_keeps_bytes_and_is_reproducible(tmp_path):
    source = make_image_folder(tmp_path / "images")
    request = ShardRequest(
        str(source),
        str(tmp_path / "a"),
        LabelSubsetSpec(per_class=2, seed=3),
        max_samples_per_shard=5,
    )
    manifest = shard_dataset(request)
    assert manifest.class_names == CLASSES
    assert manifest.split("unlabeled").samples == 24
    assert manifest.split("test").samples == 9

    # Encoded bytes are the source files' bytes (no re-encode), labels and metadata present.
    originals = {p.stem: p.read_bytes() for p in (source / "train").rglob("*.*")}
    for shard in manifest.split("labeled").shards:
        for name, data in tar_members(shard.uri).items():
            if name.endswith((".jpg", ".png")):
                stem = name.split(".")[0].split("_", 1)[1]  # key: <class>_<file stem>
                assert data == originals[stem]
            if name.endswith(".json"):
                meta = json.loads(data)
                assert meta["class_name"] == CLASSES[meta["label"]]
    labeled_labels = [
        int(data)
        for shard in manifest.split("labeled").shards
        for name, data in tar_members(shard.uri).items()
        if name.endswith(".cls")
    ]
    assert Counter(labeled_labels) == {0: 2, 1: 2, 2: 2}

    # Same inputs elsewhere: byte-identical shards, same order, same labeled subset.
    again = shard_dataset(ShardRequest(**{**request.__dict__, "output": str(tmp_path / "b")}))
    assert again.fingerprint == manifest.fingerprint
    for split in manifest.splits:
        assert [s.sha256 for s in again.split(split).shards] == [
            s.sha256 for s in manifest.split(split).shards
        ]
    # Another seed: another labeled subset.
    other = shard_dataset(
        ShardRequest(**{**request.__dict__, "output": str(tmp_path / "c"),
                        "label_subset": LabelSubsetSpec(per_class=2, seed=4)})
    )  # fmt: skip
    assert all_keys(other, "labeled") != all_keys(manifest, "labeled")


def test_rerun_is_a_noop_and_different_inputs_never_overwrite(tmp_path):
    source = make_image_folder(tmp_path / "images", per_class=4)
    request = ShardRequest(str(source), str(tmp_path / "out"), LabelSubsetSpec(per_class=1))
    first = shard_dataset(request)
    manifest_file = tmp_path / "out" / "manifest.json"
    before = manifest_file.read_bytes(), manifest_file.stat().st_mtime_ns
    assert shard_dataset(request) == first
    assert (manifest_file.read_bytes(), manifest_file.stat().st_mtime_ns) == before

    changed = ShardRequest(**{**request.__dict__, "seed": 9})
    with pytest.raises(DatasetExistsError, match="already published"):
        shard_dataset(changed)
    assert manifest_file.read_bytes() == before[0]


def test_interrupted_run_publishes_nothing_and_the_rerun_completes(tmp_path, monkeypatch):
    source = make_image_folder(tmp_path / "images")
    request = ShardRequest(str(source), str(tmp_path / "out"), LabelSubsetSpec(per_class=1),
                           max_samples_per_shard=4)  # fmt: skip
    from simclrv2.datasets.image_folder_source import ImageFolderSource

    real_read = ImageFolderSource.read
    calls = {"n": 0}

    def failing_read(self, split, record):
        calls["n"] += 1
        if calls["n"] == 10:
            raise OSError("disk went away")
        return real_read(self, split, record)

    monkeypatch.setattr(ImageFolderSource, "read", failing_read)
    with pytest.raises(OSError, match="disk went away"):
        shard_dataset(request)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").rglob("*.tmp*"))  # no half-written shard left
    monkeypatch.setattr(ImageFolderSource, "read", real_read)
    manifest = shard_dataset(request)
    assert manifest.split("unlabeled").samples == 24


def test_parallel_parts_merge_into_the_same_dataset(tmp_path):
    source = make_image_folder(tmp_path / "images")
    single = shard_dataset(ShardRequest(str(source), str(tmp_path / "one"),
                                        LabelSubsetSpec(per_class=2)))  # fmt: skip
    request = ShardRequest(str(source), str(tmp_path / "three"), LabelSubsetSpec(per_class=2),
                           num_parts=3)  # fmt: skip
    store = ObjectStore()
    plan = make_plan(request, store)
    with pytest.raises(ValueError, match="has not been written"):
        write_part(plan, 2, store) and publish(plan, store)
    for part in (1, 0):  # any order, as parallel jobs finish
        write_part(plan, part, store)
    manifest = publish(plan, store)
    assert manifest.fingerprint == single.fingerprint
    for split in single.splits:
        assert sorted(all_keys(manifest, split)) == sorted(all_keys(single, split))
    assert len(manifest.split("unlabeled").shards) == 3


def test_corrupt_images_are_refused_by_the_shard_step(tmp_path):
    source = make_image_folder(tmp_path / "images", per_class=10)
    broken = source / "train" / "dog" / "dog_0.jpg"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated JPEG
    request = ShardRequest(str(source), str(tmp_path / "out"), LabelSubsetSpec(per_class=1))
    with pytest.raises(ValueError, match=r"dog_0\.jpg cannot be decoded"):
        shard_dataset(request)
    assert not list((tmp_path / "out").glob("*.tar"))
    assert read_published(request.output, ObjectStore()) is None


def test_corrupt_images_are_skipped_counted_and_fail_past_the_threshold(tmp_path, caplog):
    source = make_image_folder(tmp_path / "images", per_class=10)
    manifest = shard_dataset(
        ShardRequest(str(source), str(tmp_path / "out"), LabelSubsetSpec(per_class=1))
    )
    spoil_member(manifest, "unlabeled", "dog_dog_0.jpg")
    resize = eval_transform(16)  # images differ in size
    loader = make_shard_loader(manifest, "unlabeled", resize, batch_size=5, num_workers=0,
                               max_corrupt_fraction=0.1, with_keys=True)  # fmt: skip
    keys = [k for _, _, batch in loader for k in batch]
    assert len(keys) == 29 and "dog_dog_0" not in keys
    assert "skipping undecodable sample dog_dog_0" in caplog.text
    strict = make_shard_loader(manifest, "unlabeled", resize, batch_size=5, num_workers=0,
                               max_corrupt_fraction=0.0)  # fmt: skip
    with pytest.raises(CorruptDataError, match="1 of 30 samples could not be decoded"):
        list(strict)


def test_two_views_through_the_loader_and_fixed_length_epochs(tmp_path):
    source = make_image_folder(tmp_path / "images")
    request = ShardRequest(
        str(source), str(tmp_path / "out"), LabelSubsetSpec(per_class=1), max_samples_per_shard=3
    )
    manifest = shard_dataset(request)
    views = TwoViews(pretrain_transform(16, 0.5))
    loader = make_shard_loader(
        manifest, "unlabeled", views, batch_size=4, num_workers=2, image_mode="rgb",
        samples_per_epoch=40, rank=1, world_size=2,
    )  # fmt: skip
    batches = list(loader)
    assert len(batches) == 5  # 40 samples / 2 ranks = 20 = 5 batches of 4 (workers: 3 + 2)
    (view_a, view_b), labels = batches[0]
    assert view_a.shape == view_b.shape == (4, 3, 16, 16) and view_a.dtype == torch.float32
    assert not torch.equal(view_a, view_b)
    assert labels.tolist() == [-1] * 4
    # A profile's many workers on a split of two batches: two workers, still two batches.
    small = make_shard_loader(
        manifest, "labeled", pretrain_transform(16, 0.5), batch_size=2, num_workers=8,
        image_mode="rgb",
        samples_per_epoch=4, persistent_workers=False,
    )  # fmt: skip
    assert small.num_workers == 2 and len(list(small)) == 2


def test_missing_shard_and_tampering_are_reported_clearly(tmp_path):
    source = make_image_folder(tmp_path / "images")
    request = ShardRequest(
        str(source), str(tmp_path / "out"), LabelSubsetSpec(per_class=1), max_samples_per_shard=5
    )
    manifest = shard_dataset(request)
    shards = manifest.split("unlabeled").shards
    Path(shards[1].uri).write_bytes(Path(shards[1].uri).read_bytes()[:-512] + b"x" * 512)
    bad = verify_dataset(manifest, print_fn=lambda _: None)
    assert bad == [shards[1].uri]
    Path(shards[0].uri).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(shards[0].uri)):
        make_shard_loader(manifest, "unlabeled", batch_size=2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_manifest(str(tmp_path / "nowhere"))


@pytest.mark.s3
def test_bad_s3_targets_fail_before_writing(s3_server, s3_bucket, tmp_path):
    source = make_image_folder(tmp_path / "images", per_class=2)
    request = ShardRequest(str(source), "s3://no-such-bucket-here/x", LabelSubsetSpec(per_class=1))
    with pytest.raises(StorageError, match="does not exist"):
        shard_dataset(request, ObjectStore(s3_server.settings))
    from dataclasses import replace

    wrong = replace(s3_server.settings, secret_access_key="not-the-secret")
    request = ShardRequest(str(source), f"s3://{s3_bucket}/x", LabelSubsetSpec(per_class=1))
    with pytest.raises(StorageError, match="AWS_SECRET_ACCESS_KEY") as error:
        shard_dataset(request, ObjectStore(wrong))
    assert "not-the-secret" not in str(error.value)
    assert ObjectStore(s3_server.settings).list_files(f"s3://{s3_bucket}/") == []


def test_bad_sources_and_label_specs_fail_before_writing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises((FileNotFoundError, ValueError)):
        shard_dataset(ShardRequest(str(tmp_path / "missing"), str(out)))
    with pytest.raises(ValueError, match="neither a built-in dataset"):
        shard_dataset(ShardRequest("imagenet-21k", str(out)))
    source = make_image_folder(tmp_path / "images", per_class=2)
    names = tmp_path / "1percent.txt"
    names.write_text("cat_0.jpg\nnot_there.JPEG\n")
    with pytest.raises(ValueError, match=r"not_there\.JPEG"):
        shard_dataset(ShardRequest(str(source), str(out), LabelSubsetSpec(file_list=str(names))))
    with pytest.raises(ValueError, match="fewer than"):
        shard_dataset(ShardRequest(str(source), str(out), LabelSubsetSpec(per_class=5)))
    assert not out.exists() or not any(out.rglob("*"))


def test_label_file_selects_exactly_those_images(tmp_path):
    source = make_image_folder(tmp_path / "images", per_class=3)
    names = tmp_path / "subset.txt"
    names.write_text("cat_0.jpg\n  dog_1.png \n\nfox_2.jpg\n")
    manifest = shard_dataset(
        ShardRequest(str(source), str(tmp_path / "out"), LabelSubsetSpec(file_list=str(names)))
    )
    assert sorted(all_keys(manifest, "labeled")) == ["cat_cat_0", "dog_dog_1", "fox_fox_2"]


def test_cli_shard_and_verify(tmp_path, capsys):
    from simclrv2.cli import main

    source = make_image_folder(tmp_path / "images", per_class=4)
    out = tmp_path / "out"
    args = ["shard", "--source", str(source), "--output", str(out), "--labels-per-class", "2",
            "--max-bytes-per-shard", "20KiB"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "labeled" in printed and "published at" in printed
    manifest = load_manifest(str(out))
    # A shard closes once it reaches the limit: at most one sample more, then tar pads the
    # archive to a 10 KiB record.
    shards = manifest.split("unlabeled").shards
    assert all(s.bytes <= 20 * 1024 + 5 * 1024 + 10240 for s in shards)
    assert len(shards) >= 2
    assert len(manifest.split("unlabeled").shards) > 1
    assert main(["verify", str(out)]) == 0
    assert main([*args[:-1], "40KiB"]) == 2  # different inputs: refused
    assert "already published" in capsys.readouterr().err


@pytest.mark.s3
def test_image_folder_on_s3_to_s3(s3_server, s3_bucket, tmp_path):
    store = ObjectStore(s3_server.settings)
    local = make_image_folder(tmp_path / "images", per_class=4)
    for path in sorted(local.rglob("*.*")):
        store.write_bytes(f"s3://{s3_bucket}/raw/{path.relative_to(local)}", path.read_bytes())
    manifest = shard_dataset(
        ShardRequest(f"s3://{s3_bucket}/raw", f"s3://{s3_bucket}/shards",
                     LabelSubsetSpec(per_class=1), max_samples_per_shard=5),
        store,
    )  # fmt: skip
    assert manifest.source == f"imagefolder:s3://{s3_bucket}/raw"
    assert manifest.split("unlabeled").samples == 12 and manifest.split("test").samples == 9
    # Same content as sharding the local copy: the fingerprint covers names and sizes.
    local_manifest = shard_dataset(
        ShardRequest(str(local), str(tmp_path / "out"), LabelSubsetSpec(per_class=1),
                     max_samples_per_shard=5)
    )  # fmt: skip
    assert [s.sha256 for s in manifest.split("labeled").shards] == [
        s.sha256 for s in local_manifest.split("labeled").shards
    ]
    loader = make_shard_loader(
        manifest, "test", eval_transform(16), batch_size=3, num_workers=2,
        s3_settings=s3_server.settings, image_mode="rgb",
    )  # fmt: skip
    assert sum(len(labels) for _, labels in loader) == 9


def test_fashion_mnist_to_a_local_folder(tmp_path):
    manifest = shard_dataset(
        ShardRequest("fashion-mnist", str(tmp_path / "fm"), LabelSubsetSpec(per_class=2),
                     max_samples_per_shard=100, sample_limit=250)
    )  # fmt: skip
    assert manifest.class_names[0] == "T-shirt/top"
    assert manifest.split("labeled").samples == 20
    images, labels = next(iter(make_shard_loader(manifest, "labeled", batch_size=20,
                                                 num_workers=0, image_mode="gray")))  # fmt: skip
    assert images.shape == (20, 1, 28, 28) and sorted(labels.tolist()) == sorted(
        list(range(10)) * 2
    )


@pytest.mark.parametrize("resampled", [False, True])
def test_persistent_workers_pass_k_equals_a_fresh_loader_at_that_epoch(tmp_path, resampled):
    """Training steps iterate one loader over all epochs (workers persist); a resumed run
    builds a fresh loader at its epoch. Both must give the same batches, augmentations
    included, so every pass reseeds the workers from (seed, rank, worker, epoch)."""
    source = make_image_folder(tmp_path / "images")
    request = ShardRequest(
        str(source), str(tmp_path / "out"), LabelSubsetSpec(per_class=1), max_samples_per_shard=3
    )
    manifest = shard_dataset(request)
    views = TwoViews(pretrain_transform(16, 0.5))
    options = {"batch_size": 4, "num_workers": 2, "image_mode": "rgb", "seed": 7,
               "samples_per_epoch": 16 if resampled else None, "shuffle_buffer": 5}  # fmt: skip

    def passes(loader, count):
        return [[batch[0][0] for batch in loader] for _ in range(count)]

    persistent = passes(make_shard_loader(manifest, "unlabeled", views, epoch=3, **options), 3)
    for k in (1, 2):
        fresh = passes(make_shard_loader(manifest, "unlabeled", views, epoch=3 + k, **options), 1)
        assert len(fresh[0]) == len(persistent[k])
        for got, want in zip(fresh[0], persistent[k], strict=True):
            assert torch.equal(got, want)
    # ...and epochs differ from each other (new order, new views).
    assert not torch.equal(persistent[0][0], persistent[1][0])
