"""Model files passed between steps: architecture + weights, loadable with weights_only=True.

A model artifact is a torch.save'd dict of plain values and tensors: {"kind", "format",
"model_config", "num_classes", "proj_layers", "state_dict"}. No pickled classes, so loading a
file from S3 can never run code.
"""

import dataclasses
import io

import torch
from torch import nn

from simclrv2.models.resnet import EncoderConfig
from simclrv2.models.simclr_model import Classifier, ContrastiveModel, ModelConfig
from simclrv2.storage.object_store import ObjectStore

FORMAT = 1


def save_model(store: ObjectStore, uri: str, model: nn.Module, **metadata) -> None:
    """Write the artifact of a ContrastiveModel or Classifier (unwrapped, on any device)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    if isinstance(model, ContrastiveModel):
        record = {"kind": "contrastive", "model_config": model.config.to_dict()}
    elif isinstance(model, Classifier):
        record = {
            "kind": "classifier",
            "encoder_config": dataclasses.asdict(model.encoder.config),
            "num_classes": model.classifier.out_features,
            "proj_layers": len(model.projection_layers),
            "num_proj_layers": model.num_proj_layers,
            "proj_out_dim": model.proj_out_dim,
        }
    else:
        raise TypeError(f"cannot save a {type(model).__name__} as a model artifact")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    record |= {"format": FORMAT, "state_dict": state, "metadata": metadata}
    buffer = io.BytesIO()
    torch.save(record, buffer)
    store.write_bytes(uri, buffer.getvalue())


def load_model(store: ObjectStore, uri: str) -> tuple[nn.Module, dict]:
    """(model in eval mode on the CPU, the artifact's metadata)."""
    if not store.exists(uri):
        raise FileNotFoundError(f"no model at {uri}: pass the model.pt a simclrv2 step wrote")
    try:
        record = torch.load(io.BytesIO(store.read_bytes(uri)), weights_only=True)
    except Exception as error:  # anything torch.load refuses is about this file's content
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{uri} is not a simclrv2 model artifact ({reason}): pass the model.pt a "
            "simclrv2 step wrote"
        ) from error
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(
            f"{uri} is not a simclrv2 model artifact of format {FORMAT} (a plain state_dict "
            "or another program's file?): pass the model.pt a simclrv2 step wrote"
        )
    if record["kind"] == "contrastive":
        model = ContrastiveModel(ModelConfig.from_dict(record["model_config"]))
    else:
        model = Classifier(
            EncoderConfig(**record["encoder_config"]),
            record["num_classes"],
            record["proj_layers"],
            record["num_proj_layers"],
            proj_out_dim=record.get("proj_out_dim", 128),  # older artifacts: k < num layers
        )
    model.load_state_dict(record["state_dict"])
    return model.eval(), record.get("metadata", {})
