"""Frozen features of a whole split: what kNN and linear evaluation learn from."""

import torch

from simclrv2.config.run_config import RunConfig
from simclrv2.data.augmentations import eval_transform
from simclrv2.performance import autocast, prepare_images
from simclrv2.shards.loader import make_shard_loader
from simclrv2.shards.manifest import DatasetManifest
from simclrv2.storage.s3_client import S3Settings


@torch.no_grad()
def split_features(
    encoder: torch.nn.Module,
    manifest: DatasetManifest,
    split: str,
    *,
    image_size: int,
    image_mode: str | None,
    device: torch.device,
    channels_last: bool = False,
    bf16: bool = False,
    batch_size: int = 256,
    num_workers: int = 2,
    s3_settings: S3Settings | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) fp32 on `device`, labels (N,)) of every image of `split`, with the
    evaluation preprocessing (centre crop) and the encoder in eval mode (BN running stats).
    The encoder's train/eval mode is restored afterwards."""
    was_training = encoder.training
    encoder.eval()
    loader = make_shard_loader(
        manifest, split, eval_transform(image_size), batch_size=batch_size,
        num_workers=num_workers, s3_settings=s3_settings, shuffle_buffer=0, rank=0,
        world_size=1, image_mode=image_mode, persistent_workers=False, check=False,
    )  # fmt: skip
    features, labels = [], []
    try:
        for images, batch_labels in loader:
            with autocast(device, bf16):
                features.append(encoder(prepare_images(images, device, channels_last)).float())
            labels.append(batch_labels.to(device))
    finally:
        encoder.train(was_training)
    return torch.cat(features), torch.cat(labels)


def labeled_and_test_features(
    encoder: torch.nn.Module, manifest: DatasetManifest, config: RunConfig,
    device: torch.device, bf16: bool, s3_settings: S3Settings | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """((features, labels) of the labeled split, (features, labels) of the test split), with
    the run's image size, mode, memory format and workers."""
    data = config.data

    def features(split):
        return split_features(
            encoder, manifest, split, image_size=data.image_size, image_mode=data.image_mode,
            device=device, channels_last=config.runtime.channels_last, bf16=bf16,
            num_workers=data.num_workers, s3_settings=s3_settings,
        )  # fmt: skip

    return features("labeled"), features("test")
