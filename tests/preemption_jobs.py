"""The pipeline steps as the preemption tests run them: one function, plain JSON arguments.

Each call is one attempt of one step in a process of its own (tests/fork_server.py), through
the same library function a component or the CLI calls, on a tiny dataset on S3 (the
AWS_* variables name the server).
"""

from simclrv2.config.loading import from_dict
from simclrv2.config.run_config import RunConfig
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec


def run_job(step: str, settings: dict, output: str, **inputs) -> None:
    """One attempt of `step`: "shard", "pretrain", "finetune", "supervised", "pseudolabel",
    "distill" or "evaluate"; `settings` is the run config (a dict), `inputs` the step's
    upstream artifacts."""
    config = from_dict(RunConfig, settings)
    if step == "shard":
        from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset

        request = ShardRequest(
            "fashion-mnist", output, LabelSubsetSpec(per_class=inputs["per_class"]),
            max_samples_per_shard=inputs["shard_samples"], sample_limit=inputs["sample_limit"],
            num_parts=inputs["num_parts"],
        )  # fmt: skip
        shard_dataset(request)
    elif step == "pretrain":
        from simclrv2.steps.pretrain import pretrain

        pretrain(config, output)
    elif step in ("finetune", "supervised"):
        from simclrv2.steps.finetune import finetune

        finetune(config, output, pretrained_uri=inputs.get("pretrained"))
    elif step == "pseudolabel":
        from simclrv2.steps.pseudolabel import pseudolabel

        pseudolabel(config, inputs["teacher"], output, batch_size=inputs["batch_size"])
    elif step == "distill":
        from simclrv2.steps.distill import distill

        distill(config, output, inputs["teacher"], inputs["pseudo_labels"])
    elif step == "evaluate":
        from simclrv2.steps.evaluate import evaluate

        evaluate(config, inputs["models"], output, batch_size=inputs["batch_size"])
    else:
        raise ValueError(f"unknown step {step!r}")
