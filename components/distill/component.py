"""distill: a student from the teacher's stored soft labels on the unlabeled images."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def distill(
    dataset: Input[Dataset],
    teacher: Input[Model],
    pseudo_labels: Input[Dataset],
    run_config: str,
    work_root: str,
    run_id: str,
    epochs: int,
    temperature: float,
    model: Output[Model],
):
    """Writes to {work_root}/{run_id}/distill."""
    from simclrv2.pipeline_support.artifact_pointer import read_pointer, write_pointer
    from simclrv2.pipeline_support.gpu_launch import run_step
    from simclrv2.pipeline_support.step_config import step_config
    from simclrv2.steps.distill import distill as run_distill
    from simclrv2.storage.uri import join_uri

    config = step_config(
        run_config,
        dataset.path,
        run_id,
        distill__optimizer__epochs=epochs,
        distill__temperature=temperature,
    )
    output = join_uri(work_root, run_id, "distill")
    teacher_uri, labels_uri = read_pointer(teacher.path), read_pointer(pseudo_labels.path)
    model_uri = run_step(
        "distill", config, output, lambda: run_distill(config, output, teacher_uri, labels_uri),
        teacher=teacher_uri, pseudo_labels=labels_uri,
    )  # fmt: skip
    write_pointer(model.path, model_uri)
    model.metadata.update({"uri": model_uri})
