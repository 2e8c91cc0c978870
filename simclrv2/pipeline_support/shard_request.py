"""The shard step's request from the pipeline's typed parameters (one place for the three
shard components: whole, one part of a fan-out, and the publish that merges the parts).

The pipeline always publishes versioned datasets: `dataset_uri` is the base under which each
distinct dataset gets its own `v-<fingerprint>` folder, so a recurring run over a source that
gains images shards a new version instead of failing on the old one."""

from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.shards.shard_dataset import ShardRequest


def shard_request(
    source: str,
    dataset_uri: str,
    label_fraction: float,
    labels_per_class: int,
    seed: int,
    max_samples_per_shard: int,
    max_bytes_per_shard: int,
    sample_limit: int,
    num_parts: int = 1,
) -> ShardRequest:
    """labels_per_class > 0 overrides label_fraction; sample_limit 0 means every image."""
    if not dataset_uri:
        raise ValueError("dataset_uri is empty: give the base URI datasets are published under")
    labels = (
        LabelSubsetSpec(per_class=labels_per_class, seed=seed)
        if labels_per_class > 0
        else LabelSubsetSpec(fraction=label_fraction, seed=seed)
    )
    return ShardRequest(
        source,
        dataset_uri,
        labels,
        seed=seed,
        max_samples_per_shard=max_samples_per_shard,
        max_bytes_per_shard=max_bytes_per_shard,
        sample_limit=sample_limit or None,
        num_parts=num_parts,
        versioned=True,
    )
