"""promote: the candidate the promotion gate chose becomes the production model."""

from kfp import dsl
from kfp.dsl import Input, Model

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def promote(
    student: Input[Model], teacher: Input[Model], work_root: str, run_id: str, production: str
) -> str:
    """Runs only when evaluate's gate promoted a model; copies that model (the student, or
    the teacher with promotion.candidate teacher/best), its metrics and a pointer to this run
    to `production`."""
    import json

    from simclrv2.pipeline_support.artifact_pointer import read_pointer
    from simclrv2.pipeline_support.promotion import promote as run_promote
    from simclrv2.pipeline_support.promotion_record import read_decision
    from simclrv2.pipeline_support.retrain_decision import read_identity
    from simclrv2.storage.object_store import ObjectStore
    from simclrv2.storage.uri import join_uri

    store = ObjectStore()
    metrics = json.loads(store.read_bytes(join_uri(work_root, run_id, "evaluate", "metrics.json")))
    candidate = read_decision(work_root, run_id, store)["candidate"]
    model = read_pointer({"student": student.path, "teacher": teacher.path}[candidate])
    identity = read_identity(work_root, run_id, store)
    record = run_promote(model, metrics, candidate, production, run_id, store, identity)
    top1 = record["top1"]
    print(f"[promote] the {candidate} {record['model']} is production at {production} "
          f"(top-1 {top1:.4f})")  # fmt: skip
    return join_uri(production, "model.pt")
