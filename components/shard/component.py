"""shard: images -> WebDataset shards + manifest on S3; the Dataset artifact points at it.

`dataset_uri` is a base: each distinct dataset is published in its own content-addressed
version folder under it (`<dataset_uri>/v-<fingerprint>`), and the Dataset artifact points at
that version. Unchanged inputs find their version already there and do no work.

Three components for one step: `shard` does it all in one pod; with a fan-out, `shard_part`
writes one independent range (one pod each, under dsl.ParallelFor) and `shard_publish`
merges the parts into the manifest.
"""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def shard(
    source: str,
    dataset_uri: str,
    label_fraction: float,
    labels_per_class: int,
    seed: int,
    max_samples_per_shard: int,
    max_bytes_per_shard: int,
    sample_limit: int,
    dataset: Output[Dataset],
):
    """labels_per_class > 0 overrides label_fraction; sample_limit 0 means every image."""
    from simclrv2.pipeline_support.artifact_pointer import dataset_pointer
    from simclrv2.pipeline_support.shard_request import shard_request
    from simclrv2.shards.shard_dataset import shard_dataset_at

    version, manifest = shard_dataset_at(
        shard_request(source, dataset_uri, label_fraction, labels_per_class, seed,
                      max_samples_per_shard, max_bytes_per_shard, sample_limit)
    )  # fmt: skip
    print(f"[shard] dataset version {version} ({manifest.created_at})")
    dataset.metadata.update(dataset_pointer(dataset.path, version, manifest))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def shard_part(
    source: str,
    dataset_uri: str,
    label_fraction: float,
    labels_per_class: int,
    seed: int,
    max_samples_per_shard: int,
    max_bytes_per_shard: int,
    sample_limit: int,
    num_parts: int,
    part: int,
) -> int:
    """Writes part `part` of `num_parts` (skipped when already written); returns its shards."""
    from simclrv2.pipeline_support.shard_request import shard_request
    from simclrv2.shards.shard_dataset import make_plan, write_part
    from simclrv2.storage.object_store import ObjectStore

    store = ObjectStore()
    request = shard_request(
        source, dataset_uri, label_fraction, labels_per_class, seed, max_samples_per_shard,
        max_bytes_per_shard, sample_limit, num_parts,
    )  # fmt: skip
    store.check_bucket(dataset_uri)
    plan = make_plan(request, store)
    print(f"[shard] part {part + 1}/{num_parts} of dataset version {plan.request.output}")
    written = write_part(plan, part, store)
    return sum(len(shards) for shards in written.values())


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def shard_publish(
    source: str,
    dataset_uri: str,
    label_fraction: float,
    labels_per_class: int,
    seed: int,
    max_samples_per_shard: int,
    max_bytes_per_shard: int,
    sample_limit: int,
    num_parts: int,
    dataset: Output[Dataset],
):
    """Merges every part into the manifest (written last); fails if a part is missing."""
    from simclrv2.pipeline_support.artifact_pointer import dataset_pointer
    from simclrv2.pipeline_support.shard_request import shard_request
    from simclrv2.shards.shard_dataset import make_plan, publish
    from simclrv2.storage.object_store import ObjectStore

    store = ObjectStore()
    request = shard_request(
        source, dataset_uri, label_fraction, labels_per_class, seed, max_samples_per_shard,
        max_bytes_per_shard, sample_limit, num_parts,
    )  # fmt: skip
    plan = make_plan(request, store)
    manifest = publish(plan, store)
    print(f"[shard] dataset version {plan.request.output} ({manifest.created_at})")
    dataset.metadata.update(dataset_pointer(dataset.path, plan.request.output, manifest))
