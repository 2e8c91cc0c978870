"""promote: the student becomes the production model (run only when it beats it)."""

from kfp import dsl
from kfp.dsl import Input, Model

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def promote(student: Input[Model], work_root: str, run_id: str, production: str) -> str:
    """Copies the student, its metrics and a pointer to this run to `production`."""
    import json

    from simclrv2.pipeline_support.artifact_pointer import read_pointer
    from simclrv2.pipeline_support.promotion import promote as run_promote
    from simclrv2.pipeline_support.retrain_decision import read_identity
    from simclrv2.storage.object_store import ObjectStore
    from simclrv2.storage.uri import join_uri

    store = ObjectStore()
    metrics = json.loads(store.read_bytes(join_uri(work_root, run_id, "evaluate", "metrics.json")))
    identity = read_identity(work_root, run_id, store)
    record = run_promote(
        read_pointer(student.path), metrics, "student", production, run_id, store, identity
    )
    top1 = record["top1"]
    print(f"[promote] {record['model']} is production at {production} (top-1 {top1:.4f})")
    return join_uri(production, "model.pt")
