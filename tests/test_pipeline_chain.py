"""The whole chain on real parts: shards and every output on S3 (SeaweedFS), metrics on a
real Pushgateway. shard -> pretrain -> finetune + supervised -> pseudolabel -> distill ->
evaluate, each step reading the previous step's outputs."""

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from simclrv2.config.loading import from_dict
from simclrv2.config.run_config import RunConfig
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset
from simclrv2.steps.chain import run_chain
from simclrv2.storage.object_store import ObjectStore

TINY = {
    "data": {"image_size": 28, "image_mode": "gray", "num_workers": 1, "shuffle_buffer": 64},
    "model": {"encoder": {"depth": 18, "width_multiplier": 0.125}},
    "pretrain": {
        "optimizer": {"epochs": 1, "batch_size": 32, "base_learning_rate": 0.075,
                      "learning_rate_scaling": "sqrt", "warmup_epochs": 0.2},
        "temperature": 0.5,
        "color_jitter_strength": 0.5,
    },
    "finetune": {"optimizer": {"epochs": 2, "batch_size": 10}},
    "supervised": {"optimizer": {"epochs": 2, "batch_size": 10, "warmup_epochs": 0.0,
                                 "min_steps": 0}},
    "distill": {"optimizer": {"epochs": 1, "batch_size": 32, "base_learning_rate": 0.075,
                              "learning_rate_scaling": "sqrt", "warmup_epochs": 0.0}},
    "runtime": {"checkpoint_every_steps": 3, "log_every_steps": 2, "bf16": False},
}  # fmt: skip


@pytest.mark.s3
@pytest.mark.pushgateway
@pytest.mark.slow
def test_chain_on_s3_with_metrics_on_a_pushgateway(s3_server, s3_bucket, pushgateway,
                                                    monkeypatch):  # fmt: skip
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway.url)
    store = ObjectStore(s3_server.settings)
    dataset = f"s3://{s3_bucket}/data"
    shard_dataset(
        ShardRequest("fashion-mnist", dataset, LabelSubsetSpec(per_class=2),
                     max_samples_per_shard=40, sample_limit=128),
        store,
    )  # fmt: skip
    config = from_dict(RunConfig, {**TINY, "run_id": "chain-test",
                                   "data": {**TINY["data"], "dataset": dataset}})  # fmt: skip
    output = f"s3://{s3_bucket}/run"
    lines = []
    metrics = run_chain(config, output, store=store, print_fn=lines.append)

    for path in ("pretrain/model.pt", "finetune/model.pt", "supervised/model.pt",
                 "pseudolabels/manifest.json", "distill/model.pt", "evaluate/metrics.json",
                 "evaluate/report.html", "evaluate/teacher_confusion_matrix.png",
                 "pretrain/config.yaml", "distill/curves.png", "summary.json"):  # fmt: skip
        assert store.exists(f"{output}/{path}"), path
    assert set(metrics["models"]) == {"teacher", "student", "supervised"}
    for result in metrics["models"].values():
        assert result["num_examples"] == 128
        assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
    summary = json.loads(store.read_bytes(f"{output}/summary.json"))
    assert set(summary["top1"]) == {"teacher", "student", "supervised"}
    pseudo = json.loads(store.read_bytes(f"{output}/pseudolabels/manifest.json"))
    assert sum(s["samples"] for s in pseudo["splits"]["unlabeled"]["shards"]) == 128
    assert any("[pretrain] step 5/5" in line for line in lines)

    # Every training step reported to the Pushgateway, grouped by run and step.
    text = urllib.request.urlopen(f"{pushgateway.url}/metrics", timeout=10).read().decode()
    steps = {}
    for family in text_string_to_metric_families(text):
        if family.name == "simclrv2_train_step":
            for sample in family.samples:
                if sample.labels.get("run") == "chain-test":
                    steps[sample.labels["step"]] = sample.value
    # The reference's step counts, N x epochs // batch + 1 (simclrv2/training/step_budget.py)
    assert steps["pretrain"] == 5  # 128 images / 32 + 1
    assert steps["finetune"] == 5 and steps["supervised"] == 5  # 20 labeled x 2 epochs / 10 + 1
    assert steps["distill"] == 5
