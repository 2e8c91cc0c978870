"""`simclrv2 import-tf` as a library call: checkpoint (local or S3) -> our model artifact."""

import tempfile

from simclrv2.steps.model_artifact import save_model
from simclrv2.storage.object_store import ObjectStore
from simclrv2.tf_import.bundle_reader import TensorBundle
from simclrv2.tf_import.checkpoint_files import download_checkpoint
from simclrv2.tf_import.checkpoint_import import ImportResult, import_checkpoint


def import_tf_checkpoint(
    checkpoint: str,
    output: str,
    store: ObjectStore,
    contrastive: bool = False,
    fine_tune_layer: int | None = None,
    use_ema: bool = False,
) -> ImportResult:
    """Read the official checkpoint at `checkpoint` and write its model artifact to `output`
    (written only once every variable has been accounted for, and published atomically)."""
    with tempfile.TemporaryDirectory(prefix="simclrv2-import-") as directory:
        prefix = download_checkpoint(checkpoint, store, directory)
        result = import_checkpoint(TensorBundle(prefix), contrastive, fine_tune_layer, use_ema)
    save_model(
        store,
        output,
        result.model,
        source="tensorflow-checkpoint",
        checkpoint=checkpoint,
        layout=result.layout,
        ema=result.used_ema,
        ignored={rule: len(keys) for rule, keys in result.ignored.items()},
    )
    return result
