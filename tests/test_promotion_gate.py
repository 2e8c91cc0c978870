"""The promotion gate's rules on evaluation results, the candidate choice, the decision's
records (S3-style store on a local folder, real Pushgateway) and its Markdown for the UI."""

import json
import urllib.request

import pytest

from simclrv2.config.loading import from_dict
from simclrv2.config.run_config import PromotionSettings, RunConfig
from simclrv2.pipeline_support.promotion_gate import decide_promotion, decision_markdown
from simclrv2.pipeline_support.promotion_record import decide_and_record, read_decision
from simclrv2.pipeline_support.retrain_decision import rejected_uri, write_identity
from simclrv2.storage.object_store import ObjectStore

CLASSES = [str(i) for i in range(10)]  # chance 0.10


def results(student, teacher=0.80, supervised=0.55, production=None):
    models = {"student": {"top1": student}, "teacher": {"top1": teacher},
              "supervised": {"top1": supervised}}  # fmt: skip
    if production is not None:
        models["production"] = {"top1": production}
    return {"models": models, "class_names": CLASSES}


def failed(decision, model="student"):
    (candidate,) = [c for c in decision["considered"] if c["model"] == model]
    return {r["rule"] for r in candidate["rules"] if not r["passed"]}


def test_a_good_student_is_promoted_with_and_without_production():
    settings = PromotionSettings()
    for production in (None, 0.70):
        decision = decide_promotion(results(0.78, production=production), settings)
        assert decision["promote"] and decision["candidate"] == "student"


@pytest.mark.parametrize(
    "student, production, broken",
    [
        (0.74, None, {"near_teacher"}),  # 6 points below the teacher, margin 5
        (0.75, None, set()),  # exactly at the margin
        (0.55, None, {"near_teacher", "beats_supervised"}),  # ties the supervised baseline
        (0.78, 0.78, {"beats_production"}),  # a tie does not replace production
        (0.112, None, {"near_teacher", "beats_supervised", "above_chance"}),  # chance level
        (0.112, 0.75, {"beats_production", "near_teacher", "beats_supervised", "above_chance"}),
    ],
)
def test_each_rule_at_its_threshold(student, production, broken):
    decision = decide_promotion(results(student, production=production), PromotionSettings())
    assert failed(decision) == broken
    assert decision["promote"] is (not broken)
    if broken:
        assert decision["candidate"] is None
        for rule in broken:  # every failed rule is named, with its numbers
            assert rule in decision["reason"]


def test_thresholds_come_from_the_run_config():
    strict = PromotionSettings(max_below_teacher=0.01, min_above_supervised=0.3,
                               min_above_chance=0.7, min_gain_over_production=0.05)  # fmt: skip
    decision = decide_promotion(results(0.78, production=0.75), strict)
    assert failed(decision) == {"beats_production", "near_teacher", "beats_supervised",
                                "above_chance"}  # fmt: skip
    config = from_dict(RunConfig, {"promotion": {"candidate": "best"}})
    assert config.promotion.candidate == "best" and config.promotion.max_below_teacher == 0.05
    with pytest.raises(ValueError, match=r"promotion\.candidate must be student, teacher or best"):
        PromotionSettings(candidate="newest")
    with pytest.raises(ValueError, match=r"promotion.min_above_chance .* \[-1, 1\]"):
        PromotionSettings(min_above_chance=5)


def test_best_sends_the_teacher_when_the_student_fails():
    broken_student = results(0.11, teacher=0.80, production=0.70)
    assert not decide_promotion(broken_student, PromotionSettings())["promote"]
    decision = decide_promotion(broken_student, PromotionSettings(candidate="best"))
    assert decision["promote"] and decision["candidate"] == "teacher"
    assert decision["reason"].startswith("student fails beats_production (0.1100 vs 0.7000")
    assert decision["reason"].endswith("the teacher passes every rule")
    assert [c["model"] for c in decision["considered"]] == ["student", "teacher"]
    # The teacher has no teacher to stay near; it must still beat production.
    decision = decide_promotion(results(0.11, teacher=0.69, production=0.70),
                                PromotionSettings(candidate="best"))  # fmt: skip
    assert not decision["promote"] and failed(decision, "teacher") == {"beats_production"}
    assert "student fails" in decision["reason"] and "teacher fails" in decision["reason"]


def test_markdown_shows_every_rule_and_the_verdict():
    text = decision_markdown(decide_promotion(results(0.112), PromotionSettings()))
    assert "Rejected" in text and "| above_chance | **no** | 0.1120 | 0.2000 |" in text
    assert "| beats_production | yes | 0.1120 | - | no production model yet |" in text
    assert "Promoted: the student" in decision_markdown(
        decide_promotion(results(0.78), PromotionSettings())
    )


@pytest.mark.pushgateway
def test_decision_is_written_recorded_and_pushed(tmp_path, pushgateway, monkeypatch):
    store, work, production = ObjectStore(), str(tmp_path / "work"), str(tmp_path / "prod")
    identity = {"dataset_uri": "d/v-1", "dataset_fingerprint": "1", "config_fingerprint": "c",
                "training_key": "k1"}  # fmt: skip
    write_identity(identity, work, "run-7", store)
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway.url)
    said = []
    decision = decide_and_record(results(0.112), PromotionSettings(), work, "run-7", production,
                                 store, said.append)  # fmt: skip
    assert read_decision(work, "run-7", store) == json.loads(json.dumps(decision))
    rejected = json.loads(store.read_bytes(rejected_uri(production, "k1")))
    assert rejected["run_id"] == "run-7" and rejected["top1"] == 0.112
    assert any("not promoted: student fails near_teacher" in line for line in said)
    text = urllib.request.urlopen(f"{pushgateway.url}/metrics", timeout=10).read().decode()
    pushed = [line for line in text.splitlines() if line.startswith("simclrv2_promotion_")]
    assert any('run="run-7"' in line and line.endswith(" 0") for line in pushed
               if line.startswith("simclrv2_promotion_promoted"))  # fmt: skip


def test_an_unreachable_pushgateway_only_warns(tmp_path, monkeypatch):
    monkeypatch.setenv("PUSHGATEWAY_URL", "http://127.0.0.1:9")  # nothing listens there
    said = []
    decision = decide_and_record(results(0.78), PromotionSettings(), str(tmp_path), "r", "",
                                 ObjectStore(), said.append)  # fmt: skip
    assert decision["promote"]
    assert any("could not push the decision" in line for line in said)
