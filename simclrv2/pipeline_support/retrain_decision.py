"""Whether a pipeline run trains at all: the `retrain` parameter, `always` or `on-new-data`.

A recurring run shards its source every time; the dataset version is content-addressed, so an
unchanged source costs a listing and no writing. What it trains on is identified by a
*training key*: the dataset version's fingerprint plus a fingerprint of the training
configuration (the run config and the training parameters). With `on-new-data` the run trains
only when that key is new: not the key of the production model (promoted.json), and not the
key of a candidate that was already trained, evaluated and rejected (a record under
`<production>/rejected/`). So a night without new images, or a night after a rejected
candidate on the same images, costs no GPU time; new images or a changed recipe train.

The gate writes the run's identity to `<work_root>/<run_id>/retrain-gate/training.json`;
evaluate and promote read it back to record the key next to their decision.
"""

import hashlib
import json

import yaml

from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import join_uri

RETRAIN_MODES = ("always", "on-new-data")
GATE_FOLDER = "retrain-gate"
IDENTITY_NAME = "training.json"
IDENTITY_KEYS = ("dataset_uri", "dataset_fingerprint", "config_fingerprint", "training_key")


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def training_identity(
    dataset_uri: str, dataset_fingerprint: str, run_config: str, parameters: dict
) -> dict:
    """The identity of what a run trains: the dataset version and the configuration.
    `run_config` is the pipeline's config text (YAML or JSON; compared as parsed data, so
    formatting and key order do not matter); `parameters` the training parameters."""
    config = {"run_config": yaml.safe_load(run_config or "{}") or {}, **parameters}
    config_fingerprint = _digest(config)
    return {
        "dataset_uri": dataset_uri,
        "dataset_fingerprint": dataset_fingerprint,
        "config_fingerprint": config_fingerprint,
        "training_key": _digest([dataset_fingerprint, config_fingerprint])[:24],
    }


def training_parameters(
    pretrain_epochs: int, pretrain_batch_size: int, finetune_epochs: int, distill_epochs: int,
    distill_temperature: float, pretrained_model: str = "",
) -> dict:  # fmt: skip
    """The pipeline parameters that change what a run trains. `pretrained_model` (the network
    a run starts from instead of pretraining) counts only when set, so the keys of runs that
    pretrain stay what they were. It is compared by URI: publish a new model under a new URI."""
    parameters = {
        "pretrain_epochs": pretrain_epochs, "pretrain_batch_size": pretrain_batch_size,
        "finetune_epochs": finetune_epochs, "distill_epochs": distill_epochs,
        "distill_temperature": distill_temperature,
    }  # fmt: skip
    if pretrained_model:
        parameters["pretrained_model"] = pretrained_model
    return parameters


def identity_uri(work_root: str, run_id: str) -> str:
    return join_uri(work_root, run_id, GATE_FOLDER, IDENTITY_NAME)


def rejected_uri(production: str, training_key: str) -> str:
    return join_uri(production, "rejected", f"{training_key}.json")


def write_identity(identity: dict, work_root: str, run_id: str, store: ObjectStore) -> None:
    store.write_bytes(identity_uri(work_root, run_id), json.dumps(identity, indent=1).encode())


def read_identity(work_root: str, run_id: str, store: ObjectStore) -> dict | None:
    """The run's identity (IDENTITY_KEYS), or None for a run made without the gate."""
    record = _read_json(identity_uri(work_root, run_id), store)
    return None if record is None else {key: record[key] for key in IDENTITY_KEYS}


def _read_json(uri: str, store: ObjectStore) -> dict | None:
    return json.loads(store.read_bytes(uri)) if store.exists(uri) else None


def decide(mode: str, identity: dict, production: str, store: ObjectStore) -> tuple[bool, str]:
    """(train?, the reason in one sentence)."""
    if mode not in RETRAIN_MODES:
        raise ValueError(
            f"retrain must be one of {', '.join(RETRAIN_MODES)}, got {mode!r} "
            "(pass --param retrain=on-new-data or --param retrain=always)"
        )
    version = identity["dataset_uri"]
    if mode == "always":
        return True, f"retrain=always: training on dataset version {version}"
    if not production:
        return True, "retrain=on-new-data but no production prefix is set: training"
    current = _read_json(join_uri(production, "promoted.json"), store)
    if current is not None and current.get("training_key") == identity["training_key"]:
        return False, (
            f"the production model (run {current.get('run_id')}, top-1 "
            f"{current.get('top1', float('nan')):.4f}) was trained on dataset version {version} "
            "with this configuration: nothing new to train (retrain=on-new-data)"
        )
    rejected = _read_json(rejected_uri(production, identity["training_key"]), store)
    if rejected is not None:
        return False, (
            f"run {rejected.get('run_id')} already trained on dataset version {version} with "
            "this configuration and its candidate was not promoted: nothing new to train "
            "(retrain=on-new-data; use retrain=always to train again)"
        )
    if current is None:
        return True, f"no production model yet: training on dataset version {version}"
    if current.get("dataset_fingerprint") != identity["dataset_fingerprint"]:
        return True, (
            f"new dataset version {version} (production was trained on "
            f"{current.get('dataset_uri', 'an unrecorded version')}): training"
        )
    return True, f"the training configuration changed since run {current.get('run_id')}: training"


def record_rejection(
    identity: dict, run_id: str, candidate: str, metrics: dict, production: str,
    store: ObjectStore,
) -> str:  # fmt: skip
    """Remember that this key was trained and its candidate not promoted; returns the URI."""
    uri = rejected_uri(production, identity["training_key"])
    models = metrics["models"]
    record = {
        **identity,
        "run_id": run_id,
        "candidate": candidate,
        "top1": models[candidate]["top1"],
        "production_top1": models.get("production", {}).get("top1"),
    }
    store.write_bytes(uri, json.dumps(record, indent=1).encode())
    return uri
