"""shard: images -> WebDataset shards + manifest on S3; the Dataset artifact points at it."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE)
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
    from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
    from simclrv2.pipeline_support.artifact_pointer import write_pointer
    from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset

    labels = (
        LabelSubsetSpec(per_class=labels_per_class, seed=seed)
        if labels_per_class > 0
        else LabelSubsetSpec(fraction=label_fraction, seed=seed)
    )
    request = ShardRequest(
        source,
        dataset_uri,
        labels,
        seed=seed,
        max_samples_per_shard=max_samples_per_shard,
        max_bytes_per_shard=max_bytes_per_shard,
        sample_limit=sample_limit or None,
    )
    manifest = shard_dataset(request)
    counts = {name: split.samples for name, split in manifest.splits.items()}
    write_pointer(dataset.path, dataset_uri, fingerprint=manifest.fingerprint, samples=counts)
    dataset.metadata.update({"uri": dataset_uri, "fingerprint": manifest.fingerprint, **counts})
