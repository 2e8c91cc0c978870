"""pseudolabel: the teacher's logits for every unlabeled image, as sidecar shards on S3."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def pseudolabel(
    dataset: Input[Dataset],
    teacher: Input[Model],
    run_config: str,
    work_root: str,
    run_id: str,
    pseudo_labels: Output[Dataset],
):
    """Writes sidecar shards + manifest to {work_root}/{run_id}/pseudolabels."""

    from simclrv2.pipeline_support.artifact_pointer import read_pointer, write_pointer
    from simclrv2.pipeline_support.step_config import step_config
    from simclrv2.steps.pseudolabel import pseudolabel as run_pseudolabel
    from simclrv2.storage.uri import join_uri

    config = step_config(run_config, dataset.path, run_id)
    output = join_uri(work_root, run_id, "pseudolabels")
    result = run_pseudolabel(config, read_pointer(teacher.path), output)
    write_pointer(pseudo_labels.path, output, manifest=result.manifest_uri)
    pseudo_labels.metadata.update({"uri": output})
