"""After evaluation: decide (promotion_gate), and leave the decision where people and the
next runs look for it.

- `<work_root>/<run_id>/evaluate/decision.json`: the decision with every rule's numbers,
  beside the evaluation (the promote step reads which model to promote from it);
- `<production>/rejected/<training key>.json` when nothing is promoted, so that a schedule
  with retrain=on-new-data does not train the same data and configuration again;
- a Pushgateway metric `simclrv2_promotion_promoted` (1 or 0, labels run and step
  "promotion") when PUSHGATEWAY_URL is set; a failed push only warns.
"""

import json
import os

from simclrv2.pipeline_support.promotion_gate import decide_promotion
from simclrv2.pipeline_support.retrain_decision import read_identity, record_rejection
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import join_uri

DECISION_NAME = "decision.json"


def decision_uri(work_root: str, run_id: str) -> str:
    return join_uri(work_root, run_id, "evaluate", DECISION_NAME)


def decide_and_record(
    metrics: dict, settings, work_root: str, run_id: str, production: str, store: ObjectStore,
    say=print,
) -> dict:  # fmt: skip
    decision = decide_promotion(metrics, settings)
    store.write_bytes(decision_uri(work_root, run_id), json.dumps(decision, indent=1).encode())
    say(f"[promotion] {decision['reason']}")
    identity = read_identity(work_root, run_id, store)
    if not decision["promote"] and production and identity is not None:
        candidate = decision["considered"][0]["model"]
        uri = record_rejection(identity, run_id, candidate, metrics, production, store)
        say(f"[promotion] recorded at {uri}: retrain=on-new-data will not train this again")
    push_decision(decision, run_id, say)
    return decision


def read_decision(work_root: str, run_id: str, store: ObjectStore) -> dict:
    return json.loads(store.read_bytes(decision_uri(work_root, run_id)))


def push_decision(decision: dict, run_id: str, say=print, url: str | None = None) -> bool:
    url = url or os.environ.get("PUSHGATEWAY_URL")
    if not url:
        return False
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    promoted = Gauge("simclrv2_promotion_promoted", "1 when the run promoted a model, else 0",
                     registry=registry)  # fmt: skip
    promoted.set(1 if decision["promote"] else 0)
    top1 = Gauge("simclrv2_promotion_candidate_top1_ratio", "test top-1 of each candidate",
                 ["model"], registry=registry)  # fmt: skip
    for candidate in decision["considered"]:
        top1.labels(candidate["model"]).set(candidate["top1"])
    try:
        push_to_gateway(url, job="simclrv2", registry=registry, timeout=10,
                        grouping_key={"run": run_id, "step": "promotion"})  # fmt: skip
    except Exception as error:  # a metric never fails the run
        say(f"[promotion] warning: could not push the decision to {url}: {error}")
        return False
    return True
