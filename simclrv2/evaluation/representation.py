"""Representation quality of a pretrained encoder, as the field reports it: linear
evaluation and weighted kNN on frozen features (labeled split to fit, test split to score)."""

import torch

from simclrv2.config.run_config import RunConfig
from simclrv2.evaluation.features import labeled_and_test_features
from simclrv2.evaluation.knn import knn_accuracy
from simclrv2.evaluation.linear_probe import fit_linear_probe
from simclrv2.shards.manifest import DatasetManifest
from simclrv2.storage.s3_client import S3Settings


def representation_metrics(
    encoder: torch.nn.Module, manifest: DatasetManifest, config: RunConfig,
    device: torch.device, bf16: bool, s3_settings: S3Settings | None = None,
) -> dict:  # fmt: skip
    """{"linear_top1", "linear_weight_decay", "knn_top1", "labeled_images"}."""
    (train, train_labels), (test, test_labels) = labeled_and_test_features(
        encoder.to(device), manifest, config, device, bf16, s3_settings
    )
    classes = len(manifest.class_names)
    probe = fit_linear_probe(train, train_labels, classes, seed=config.runtime.seed)
    knn = config.pretrain.knn
    knn_top1 = knn_accuracy(train, train_labels, test, test_labels, classes, knn.k,
                            knn.temperature)  # fmt: skip
    return {
        "linear_top1": probe.accuracy(test, test_labels),
        "linear_weight_decay": probe.weight_decay,
        "knn_top1": knn_top1,
        "labeled_images": len(train),
    }
