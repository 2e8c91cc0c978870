"""retrain-gate: train this run, or stop after the shard step (the `retrain` parameter)."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def retrain_gate(
    dataset: Input[Dataset],
    retrain: str,
    run_config: str,
    pretrain_epochs: int,
    pretrain_batch_size: int,
    finetune_epochs: int,
    distill_epochs: int,
    distill_temperature: float,
    work_root: str,
    run_id: str,
    production: str,
    pretrained_model: str = "",
) -> bool:
    """retrain: "always" or "on-new-data" (train only when this dataset version and training
        configuration have not been trained before; a run that starts from `pretrained_model` counts
    that model as part of its configuration). Records the run's training identity for the
        evaluate and promote steps. A single output, since kfp.local resolves only `Output` in
        conditions."""
    from simclrv2.pipeline_support.artifact_pointer import read_pointer_record
    from simclrv2.pipeline_support.retrain_decision import (
        decide,
        training_identity,
        training_parameters,
        write_identity,
    )
    from simclrv2.storage.object_store import ObjectStore

    store = ObjectStore()
    pointer = read_pointer_record(dataset.path)
    parameters = training_parameters(
        pretrain_epochs, pretrain_batch_size, finetune_epochs, distill_epochs,
        distill_temperature, pretrained_model,
    )  # fmt: skip
    identity = training_identity(pointer["uri"], pointer["fingerprint"], run_config, parameters)
    train, reason = decide(retrain, identity, production, store)
    write_identity({**identity, "retrain": retrain, "train": train, "reason": reason},
                   work_root, run_id, store)  # fmt: skip
    print(f"[retrain-gate] {reason}")
    if not train:
        print("[retrain-gate] this run ends here: no training, no evaluation, no promotion")
    return train
