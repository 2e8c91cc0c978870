"""The DAG: shard (fanned out with ParallelFor when the profile sets shard_parts) ->
retrain-gate -> [pretrain -> finetune (teacher) + supervised baseline -> pseudolabel ->
distill -> evaluate -> promote (only when the promotion gate passes)], the bracket only
when the gate says so (`retrain`: always, or on-new-data for scheduled runs).

`build_pipeline(profile)` returns the pipeline function with the profile's defaults for the
parameters users change per run and the profile's placement for every step.

A profile that declares `parameters.pretrained_model` gets that pipeline parameter: when set
(a simclrv2 model artifact or a TF checkpoint of the official releases) the run skips
pretraining (dsl.If / dsl.Else) and fine-tunes that network; empty, it pretrains as usual.
Profiles without it compile exactly as before.
"""

import json

from kfp import dsl

from components.distill.component import distill
from components.evaluate.component import evaluate
from components.finetune.component import finetune
from components.import_pretrained.component import import_pretrained
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
    if "pretrained_model" in p:
        return _build_pipeline_from_pretrained(profile, p, parts, config_text)

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
        dataset, gate, common = _data_and_retrain_gate(profile, parts, locals())
        with dsl.If(gate.outputs["Output"] == True, name="train"):  # noqa: E712
            _train_evaluate_promote(profile, dataset, common, production, pretrain_epochs,
                                    pretrain_batch_size, finetune_epochs, distill_epochs,
                                    distill_temperature)  # fmt: skip

    return simclrv2_pipeline


def _data_and_retrain_gate(profile, parts, args):
    """shard (or its fan-out) -> retrain-gate; args: the pipeline function's parameters."""
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    common = {"run_config": args["run_config"], "work_root": args["work_root"], "run_id": run_id}
    shard_args = {
        name: args[name]
        for name in ("source", "dataset_uri", "label_fraction", "labels_per_class", "seed",
                     "max_samples_per_shard", "max_bytes_per_shard", "sample_limit")
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
        retrain_gate(dataset=dataset, retrain=args["retrain"], run_config=args["run_config"],
                     pretrain_epochs=args["pretrain_epochs"],
                     pretrain_batch_size=args["pretrain_batch_size"],
                     finetune_epochs=args["finetune_epochs"], distill_epochs=args["distill_epochs"],
                     distill_temperature=args["distill_temperature"], work_root=args["work_root"],
                     run_id=run_id, production=args["production"],
                     **({"pretrained_model": args["pretrained_model"]}
                        if "pretrained_model" in args else {})),
        "retrain_gate", profile, "retrain-gate",
    )  # fmt: skip
    return dataset, gate, common


def _build_pipeline_from_pretrained(profile, p, parts, config_text):
    """The same pipeline with the `pretrained_model` parameter (see the module docstring)."""

    @dsl.pipeline(name=profile["name"], description=profile.get("description", ""))
    def simclrv2_pipeline_from_pretrained(
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
        pretrained_model: str = p.get("pretrained_model") or "",
    ):
        dataset, gate, common = _data_and_retrain_gate(profile, parts, locals())
        schedule = (production, pretrain_epochs, pretrain_batch_size, finetune_epochs,
                    distill_epochs, distill_temperature)  # fmt: skip
        with dsl.If(gate.outputs["Output"] == True, name="train"):  # noqa: E712
            with dsl.If(pretrained_model == "", name="pretrain-from-scratch"):
                _train_evaluate_promote(profile, dataset, common, *schedule)
            with dsl.Else(name="start-from-pretrained-model"):
                _train_evaluate_promote(profile, dataset, common, *schedule, pretrained_model)

    return simclrv2_pipeline_from_pretrained


def _train_evaluate_promote(
    profile, dataset, common, production, pretrain_epochs, pretrain_batch_size,
    finetune_epochs, distill_epochs, distill_temperature, pretrained_model=None,
):  # fmt: skip
    """pretrain (or, given pretrained_model, import it) -> finetune + supervised ->
    pseudolabel -> distill -> evaluate -> promote."""
    work_root, run_id = common["work_root"], common["run_id"]
    if pretrained_model is None:
        pretrained = place(
            pretrain(dataset=dataset, epochs=pretrain_epochs, batch_size=pretrain_batch_size,
                     **common),
            "pretrain", profile,
        )  # fmt: skip
    else:
        pretrained = place(
            import_pretrained(pretrained_model=pretrained_model, work_root=work_root,
                              run_id=run_id),
            "import_pretrained", profile, "import-pretrained",
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
