"""The network a pipeline run fine-tunes when it skips pretraining (`pretrained_model`).

Either our model artifact of a pretrained (contrastive) network, used where it is, or a
TensorFlow checkpoint of the official releases, imported once into the run's folder.
"""

from simclrv2.errors import UsageError
from simclrv2.models.simclr_model import ContrastiveModel
from simclrv2.steps.model_artifact import load_model
from simclrv2.storage.object_store import ObjectStore
from simclrv2.tf_import.import_to_artifact import import_tf_checkpoint

MODEL_SUFFIX = ".pt"


def resolve_pretrained(pretrained_model: str, output: str, store: ObjectStore) -> str:
    """The model artifact URI to fine-tune from: `pretrained_model` itself when it is a
    simclrv2 model file (.pt), else the checkpoint imported to `output`."""
    if pretrained_model.endswith(MODEL_SUFFIX):
        model, _ = load_model(store, pretrained_model)
        if not isinstance(model, ContrastiveModel):
            raise UsageError(
                f"pretrained_model {pretrained_model} is a {type(model).__name__}: pass a "
                "pretrained network (encoder + projection head), e.g. `simclrv2 import-tf "
                "--contrastive` of a release, or leave pretrained_model empty to pretrain"
            )
        return pretrained_model
    result = import_tf_checkpoint(pretrained_model, output, store, contrastive=True)
    print(f"[import-pretrained] {result.summary()}; written to {output}")
    return output
