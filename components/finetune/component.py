"""finetune: the teacher from the pretrained network (or, from_scratch, the baseline)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def finetune(
    dataset: Input[Dataset],
    pretrained: Input[Model],
    run_config: str,
    work_root: str,
    run_id: str,
    epochs: int,
    from_scratch: bool,
    model: Output[Model],
):
    """from_scratch: ignore `pretrained` and train the supervised baseline on the same
    labels, with the run config's `supervised` recipe (`epochs` is fine-tuning's). Writes to
    {work_root}/{run_id}/finetune (or /supervised)."""
    from simclrv2.pipeline_support.artifact_pointer import read_pointer, write_pointer
    from simclrv2.pipeline_support.gpu_launch import run_step
    from simclrv2.pipeline_support.step_config import step_config
    from simclrv2.steps.finetune import finetune as run_finetune
    from simclrv2.storage.uri import join_uri

    config = step_config(
        run_config,
        dataset.path,
        run_id,
        finetune__optimizer__epochs=epochs,
        finetune__from_scratch=from_scratch,
    )
    name = "supervised" if from_scratch else "finetune"
    source = None if from_scratch else read_pointer(pretrained.path)
    output = join_uri(work_root, run_id, name)
    model_uri = run_step(
        "finetune", config, output, lambda: run_finetune(config, output, source), pretrained=source
    )
    write_pointer(model.path, model_uri)
    model.metadata.update({"uri": model_uri})
