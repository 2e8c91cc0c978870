"""The teacher: loaded and checked against the dataset, identified by its weights, run on a
batch of images."""

import dataclasses
import hashlib
import json

import torch

from simclrv2.config.run_config import DataSettings
from simclrv2.models.simclr_model import Classifier
from simclrv2.performance import autocast, prepare_images
from simclrv2.shards.manifest import DatasetManifest
from simclrv2.steps.model_artifact import load_model
from simclrv2.storage.object_store import ObjectStore


def load_teacher(store: ObjectStore, uri: str, images: DatasetManifest, data: DataSettings):
    """The teacher Classifier (CPU, eval mode), checked against the dataset."""
    model, _ = load_model(store, uri)
    if not isinstance(model, Classifier):
        raise ValueError(
            f"{uri} is a {type(model).__name__}, not a Classifier: pseudo-label with the "
            "fine-tuned model (the finetune step's model.pt)"
        )
    classes = len(images.class_names)
    if model.classifier.out_features != classes:
        raise ValueError(
            f"the teacher {uri} predicts {model.classifier.out_features} classes but the "
            f"dataset has {classes}: was it fine-tuned on this dataset?"
        )
    channels = model.encoder.config.in_channels
    if data.image_mode is not None and channels != data.channels:
        raise ValueError(
            f"the teacher {uri} takes {channels}-channel images but data.image_mode is "
            f"{data.image_mode!r} ({data.channels} channels)"
        )
    return model


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the architecture and every weight and buffer (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dataclasses.asdict(model.encoder.config), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


def teacher_logits(teacher, images: torch.Tensor, device, channels_last: bool, bf16: bool):
    """float32 numpy logits (N, num_classes) of a batch of eval-transformed images."""
    with torch.inference_mode(), autocast(device, bf16):
        logits = teacher(prepare_images(images, device, channels_last))
    return logits.float().cpu().numpy()
