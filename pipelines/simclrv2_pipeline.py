"""The DAG: shard (fanned out with ParallelFor when the profile sets shard_parts) ->
retrain-gate -> [pretrain -> finetune (teacher) + supervised baseline -> pseudolabel ->
distill -> evaluate -> promote (only when the promotion gate passes)], the bracket only
when the gate says so (`retrain`: always, or on-new-data for scheduled runs).

`build_pipeline(profile)` returns the pipeline function with the profile's defaults for the
parameters users change per run and the profile's placement for every step.
"""

import json

from kfp import dsl

from components.distill.component import distill
from components.evaluate.component import evaluate
from components.finetune.component import finetune
from components.pretrain.component import pretrain
from components.promote.component import promote
from components.pseudolabel.component import pseudolabel
from components.retrain_gate.component import retrain_gate
from components.shard.component import shard, shard_part, shard_publish
from pipelines.placement import place


def build_pipeline(profile: dict):
    p = profile["parameters"]
    parts = int(profile.get("shard_parts", 1))
    # One line of JSON (YAML parses it): kfp copies parameter defaults into the compiled
    # file's header comment, where a multi-line string breaks the YAML.
    config_text = json.dumps(profile["run_config"], sort_keys=True)

    @dsl.pipeline(name=profile["name"], description=profile.get("description", ""))
    def simclrv2_pipeline(
        source: str = p["source"],
        dataset_uri: str = p["dataset_uri"],
        label_fraction: float = p["label_fraction"],
        labels_per_class: int = p["labels_per_class"],
        seed: int = p["seed"],
        sample_limit: int = p["sample_limit"],
        max_samples_per_shard: int = p["max_samples_per_shard"],
        max_bytes_per_shard: int = p["max_bytes_per_shard"],
        pretrain_epochs: int = p["pretrain_epochs"],
        pretrain_batch_size: int = p["pretrain_batch_size"],
        finetune_epochs: int = p["finetune_epochs"],
        distill_epochs: int = p["distill_epochs"],
        distill_temperature: float = p["distill_temperature"],
        retrain: str = p.get("retrain", "always"),
        run_config: str = config_text,
        work_root: str = profile["work_root"],
        production: str = profile["production"],
    ):
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        common = {"run_config": run_config, "work_root": work_root, "run_id": run_id}
        shard_args = {
            "source": source, "dataset_uri": dataset_uri, "label_fraction": label_fraction,
            "labels_per_class": labels_per_class, "seed": seed,
            "max_samples_per_shard": max_samples_per_shard,
            "max_bytes_per_shard": max_bytes_per_shard, "sample_limit": sample_limit,
        }  # fmt: skip
        if parts == 1:
            data = place(shard(**shard_args), "shard", profile)
        else:  # fan out: one pod per independent range, then merge into the manifest
            with dsl.ParallelFor(items=list(range(parts)), name="shard-parts") as part:
                written = place(shard_part(num_parts=parts, part=part, **shard_args), "shard",
                                profile, "shard-part")  # fmt: skip
            data = place(shard_publish(num_parts=parts, **shard_args), "shard", profile,
                         "shard-publish").after(written)  # fmt: skip
        dataset = data.outputs["dataset"]
        gate = place(
            retrain_gate(dataset=dataset, retrain=retrain, run_config=run_config,
                         pretrain_epochs=pretrain_epochs, pretrain_batch_size=pretrain_batch_size,
                         finetune_epochs=finetune_epochs, distill_epochs=distill_epochs,
                         distill_temperature=distill_temperature, work_root=work_root,
                         run_id=run_id, production=production),
            "retrain_gate", profile, "retrain-gate",
        )  # fmt: skip
        with dsl.If(gate.outputs["Output"] == True, name="train"):  # noqa: E712
            _train_evaluate_promote(profile, dataset, common, production, pretrain_epochs,
                                    pretrain_batch_size, finetune_epochs, distill_epochs,
                                    distill_temperature)  # fmt: skip

    return simclrv2_pipeline


def _train_evaluate_promote(
    profile, dataset, common, production, pretrain_epochs, pretrain_batch_size,
    finetune_epochs, distill_epochs, distill_temperature,
):  # fmt: skip
    """pretrain -> finetune + supervised -> pseudolabel -> distill -> evaluate -> promote."""
    work_root, run_id = common["work_root"], common["run_id"]
    pretrained = place(
        pretrain(dataset=dataset, epochs=pretrain_epochs, batch_size=pretrain_batch_size,
                 **common),
        "pretrain", profile,
    )  # fmt: skip
    teacher = place(
        finetune(dataset=dataset, pretrained=pretrained.outputs["model"],
                 epochs=finetune_epochs, from_scratch=False, **common),
        "finetune", profile,
    )  # fmt: skip
    baseline = place(
        finetune(dataset=dataset, pretrained=pretrained.outputs["model"],
                 epochs=finetune_epochs, from_scratch=True, **common),
        "supervised", profile,
    )  # fmt: skip
    labels = place(
        pseudolabel(dataset=dataset, teacher=teacher.outputs["model"], **common),
        "pseudolabel", profile,
    )  # fmt: skip
    student = place(
        distill(dataset=dataset, teacher=teacher.outputs["model"],
                pseudo_labels=labels.outputs["pseudo_labels"], epochs=distill_epochs,
                temperature=distill_temperature, **common),
        "distill", profile,
    )  # fmt: skip
    scores = place(
        evaluate(dataset=dataset, teacher=teacher.outputs["model"],
                 student=student.outputs["model"], baseline=baseline.outputs["model"],
                 production=production, **common),
        "evaluate", profile,
    )  # fmt: skip
    with dsl.If(scores.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
        place(
            promote(student=student.outputs["model"], teacher=teacher.outputs["model"],
                    work_root=work_root, run_id=run_id, production=production),
            "promote", profile,
        )  # fmt: skip
