"""Versioned datasets on a real S3 (SeaweedFS): each distinct dataset in its own
content-addressed folder under a base, unchanged inputs reusing theirs, old versions intact."""

from PIL import Image

from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.pipeline_support.shard_request import shard_request
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset_at, version_uri
from simclrv2.shards.verify import load_manifest, verify_dataset
from simclrv2.storage.object_store import ObjectStore
from tests.test_shards import make_image_folder


def _upload(store, local, prefix):
    for path in sorted(local.rglob("*.*")):
        store.write_bytes(f"{prefix}/{path.relative_to(local)}", path.read_bytes())


def test_new_images_make_a_new_version_and_unchanged_inputs_reuse_theirs(
    s3_server, s3_bucket, tmp_path
):
    store = ObjectStore(s3_server.settings)
    source, base = f"s3://{s3_bucket}/images", f"s3://{s3_bucket}/datasets/mine"
    _upload(store, make_image_folder(tmp_path / "images", per_class=4), source)
    request = ShardRequest(source, base, LabelSubsetSpec(per_class=1), versioned=True)

    first_uri, first = shard_dataset_at(request, store)
    assert first_uri == version_uri(base, first.fingerprint)
    assert first_uri == f"{base}/v-{first.fingerprint[:16]}"
    objects = dict(store.list_files(base))

    # The same images again: the same version, and nothing is written.
    again_uri, again = shard_dataset_at(request, store)
    assert (again_uri, again.fingerprint, again.created_at) == (
        first_uri, first.fingerprint, first.created_at
    )  # fmt: skip
    assert dict(store.list_files(base)) == objects

    # A new image in one class: a new version beside the old one.
    extra = tmp_path / "extra.png"
    Image.new("RGB", (21, 17), (3, 200, 90)).save(extra)
    store.write_bytes(f"{source}/train/cat/cat_new.png", extra.read_bytes())
    second_uri, second = shard_dataset_at(request, store)
    assert second_uri != first_uri and second.split("unlabeled").samples == 13
    old = load_manifest(first_uri, store)
    assert old.fingerprint == first.fingerprint and old.split("unlabeled").samples == 12
    assert verify_dataset(old, store, print_fn=lambda line: None) == []
    versions = {uri.removeprefix(base + "/").split("/")[0] for uri, _ in store.list_files(base)}
    assert versions == {first_uri.rsplit("/", 1)[1], second_uri.rsplit("/", 1)[1]}


def test_label_spec_and_seed_are_part_of_the_version(tmp_path):
    source = make_image_folder(tmp_path / "images", per_class=4)
    base = str(tmp_path / "datasets")
    uris = {
        shard_dataset_at(shard_request(str(source), base, 0.0, per_class, seed, 100, 2**20, 0))[0]
        for per_class, seed in ((1, 0), (2, 0), (1, 1))
    }
    assert len(uris) == 3
    assert all(uri.startswith(base + "/v-") for uri in uris)
