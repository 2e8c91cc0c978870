"""import_pretrained: the pretrained network a run starts from instead of pretraining."""

from kfp import dsl
from kfp.dsl import Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def import_pretrained(pretrained_model: str, work_root: str, run_id: str, model: Output[Model]):
    """pretrained_model: a simclrv2 model artifact (.pt, used in place) or a TensorFlow
    checkpoint of google-research/simclr (imported to {work_root}/{run_id}/pretrained)."""
    from simclrv2.pipeline_support.artifact_pointer import write_pointer
    from simclrv2.storage.object_store import ObjectStore
    from simclrv2.storage.uri import join_uri
    from simclrv2.tf_import.pretrained_source import resolve_pretrained

    output = join_uri(work_root, run_id, "pretrained", "model.pt")
    model_uri = resolve_pretrained(pretrained_model, output, ObjectStore())
    write_pointer(model.path, model_uri)
    model.metadata.update({"uri": model_uri, "source": pretrained_model})
