"""pretrain: SimCLRv2 on the unlabeled shards; resumes from its checkpoints when retried."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def pretrain(
    dataset: Input[Dataset],
    run_config: str,
    work_root: str,
    run_id: str,
    epochs: int,
    batch_size: int,
    model: Output[Model],
):
    """run_config: the run configuration YAML; epochs/batch_size override its pretrain
    section. Writes to {work_root}/{run_id}/pretrain (checkpoints included)."""
    from simclrv2.pipeline_support.artifact_pointer import write_pointer
    from simclrv2.pipeline_support.gpu_launch import run_step
    from simclrv2.pipeline_support.step_config import step_config
    from simclrv2.steps.pretrain import pretrain as run_pretrain
    from simclrv2.storage.uri import join_uri

    config = step_config(
        run_config,
        dataset.path,
        run_id,
        pretrain__optimizer__epochs=epochs,
        pretrain__optimizer__batch_size=batch_size,
    )
    output = join_uri(work_root, run_id, "pretrain")
    model_uri = run_step("pretrain", config, output, lambda: run_pretrain(config, output))
    write_pointer(model.path, model_uri)
    model.metadata.update({"uri": model_uri})
