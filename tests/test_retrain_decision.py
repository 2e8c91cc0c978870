"""The retrain gate's decision (`retrain`: always | on-new-data) against the records the
pipeline leaves next to the production model: promoted.json and rejected/<training key>.json."""

import json

import pytest

from simclrv2.pipeline_support.promotion import promote
from simclrv2.pipeline_support.retrain_decision import (
    decide,
    read_identity,
    record_rejection,
    rejected_uri,
    training_identity,
    training_parameters,
    write_identity,
)
from simclrv2.storage.object_store import ObjectStore

PARAMS = {"pretrain_epochs": 2, "pretrain_batch_size": 256, "finetune_epochs": 60,
          "distill_epochs": 1, "distill_temperature": 1.0}  # fmt: skip
CONFIG = '{"model": {"encoder": {"depth": 18}}, "data": {"image_size": 28}}'


def _identity(dataset="aaaa", config=CONFIG, **params):
    return training_identity(f"s3://b/d/v-{dataset}", dataset, config, {**PARAMS, **params})


def _metrics(student, production=None):
    models = {"student": {"top1": student}, "teacher": {"top1": 0.9}}
    if production is not None:
        models["production"] = {"top1": production}
    return {"models": models, "dataset_fingerprint": "aaaa"}


def test_identity_compares_configurations_as_data_not_as_text():
    yaml_text = "data: {image_size: 28}\nmodel:\n  encoder: {depth: 18}\n"
    assert _identity(config=yaml_text) == _identity()
    assert _identity(config=CONFIG.replace("18", "50")) != _identity()
    assert _identity(pretrain_epochs=3)["training_key"] != _identity()["training_key"]
    assert _identity(dataset="bbbb")["config_fingerprint"] == _identity()["config_fingerprint"]
    assert _identity(dataset="bbbb")["training_key"] != _identity()["training_key"]


def test_a_pretrained_model_is_part_of_the_key_only_when_set():
    def key(pretrained_model=""):
        parameters = training_parameters(2, 256, 60, 1, 1.0, pretrained_model)
        return training_identity("s3://b/d/v-aaaa", "aaaa", CONFIG, parameters)["training_key"]

    # Unset: the key of a run that pretrains, as it was before the parameter existed.
    assert training_parameters(2, 256, 60, 1, 1.0) == PARAMS
    assert key() == _identity()["training_key"]
    released = key("s3://models/r152_3x_sk1.pt")
    assert released != key()
    assert released != key("s3://models/r152_3x_sk1-v2.pt")
    assert released == key("s3://models/r152_3x_sk1.pt")


def test_decisions_against_production_and_rejected_candidates(tmp_path):
    store, production = ObjectStore(), str(tmp_path / "production")
    (tmp_path / "m.pt").write_bytes(b"weights")
    identity = _identity()

    assert decide("always", identity, production, store)[0] is True
    train, reason = decide("on-new-data", identity, production, store)
    assert train and "no production model yet" in reason

    promote(str(tmp_path / "m.pt"), _metrics(0.7), "student", production, "run-1", store, identity)
    train, reason = decide("on-new-data", identity, production, store)
    assert not train and "run run-1" in reason and "nothing new to train" in reason
    assert decide("always", identity, production, store)[0] is True

    newer = _identity(dataset="bbbb")
    train, reason = decide("on-new-data", newer, production, store)
    assert train and "new dataset version s3://b/d/v-bbbb" in reason
    assert "s3://b/d/v-aaaa" in reason  # what production was trained on
    train, reason = decide("on-new-data", _identity(finetune_epochs=90), production, store)
    assert train and "configuration changed" in reason

    # The newer data was trained and its candidate rejected: not trained again.
    uri = record_rejection(newer, "run-2", "student", _metrics(0.6, 0.7), production, store)
    assert uri == rejected_uri(production, newer["training_key"])
    record = json.loads(store.read_bytes(uri))
    assert (record["run_id"], record["top1"], record["production_top1"]) == ("run-2", 0.6, 0.7)
    train, reason = decide("on-new-data", newer, production, store)
    assert not train and "run run-2" in reason and "not promoted" in reason


def test_a_bad_mode_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"always, on-new-data.*'nightly'"):
        decide("nightly", _identity(), str(tmp_path), ObjectStore())


def test_identity_round_trip_keeps_only_the_identity(tmp_path):
    store, work = ObjectStore(), str(tmp_path / "work")
    assert read_identity(work, "r1", store) is None  # a run made without the gate
    write_identity({**_identity(), "train": True, "reason": "x"}, work, "r1", store)
    assert read_identity(work, "r1", store) == _identity()
