"""Promote a model: copy it to the production prefix (promotion_gate decides whether).

Production lives at a stable prefix: model.pt, metrics.json (the evaluate step's record for
the promoted model) and promoted.json (which run promoted it, when, and its accuracy).
Recurring retraining runs compare against it; promotion_gate's rules decide.
"""

import json
from datetime import UTC, datetime

from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import join_uri


def production_model_uri(production: str, store: ObjectStore) -> str | None:
    uri = join_uri(production, "model.pt")
    return uri if store.exists(uri) else None


def promote(
    model_uri: str, metrics: dict, candidate: str, production: str, run_id: str,
    store: ObjectStore | None = None, identity: dict | None = None,
) -> dict:  # fmt: skip
    """Copy the candidate model to `production` with its metrics and a pointer to the run;
    promoted.json is written last, so a half-done promotion is never announced. `identity`
    (retrain_decision.training_identity: dataset version and configuration) is recorded in
    promoted.json, where a later run with retrain=on-new-data compares with it."""
    store = store or ObjectStore()
    store.write_bytes(join_uri(production, "model.pt"), store.read_bytes(model_uri))
    record = metrics["models"][candidate]
    store.write_bytes(join_uri(production, "metrics.json"), json.dumps(record).encode())
    pointer = {
        "model": model_uri,
        "candidate": candidate,
        "run_id": run_id,
        "top1": record["top1"],
        "dataset_fingerprint": metrics.get("dataset_fingerprint"),
        **(identity or {}),
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    store.write_bytes(join_uri(production, "promoted.json"), json.dumps(pointer).encode())
    return pointer
