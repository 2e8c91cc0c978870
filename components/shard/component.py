"""shard: images -> WebDataset shards + manifest on S3; the Dataset artifact points at it.

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
    from simclrv2.shards.shard_dataset import shard_dataset

    manifest = shard_dataset(
        shard_request(source, dataset_uri, label_fraction, labels_per_class, seed,
                      max_samples_per_shard, max_bytes_per_shard, sample_limit)
    )  # fmt: skip
    dataset.metadata.update(dataset_pointer(dataset.path, dataset_uri, manifest))


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
    written = write_part(make_plan(request, store), part, store)
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
    manifest = publish(make_plan(request, store), store)
    dataset.metadata.update(dataset_pointer(dataset.path, dataset_uri, manifest))
