"""The whole pipeline in one process, step after step: the laptop run (`make run`).

shard -> pretrain -> finetune (teacher) and the supervised baseline -> pseudolabel ->
distill (student) -> evaluate the three on the test set. The same library functions the
Kubeflow components wrap, chained through the same outputs (manifests and model files on a
local folder or S3), so what works here works step by step on a cluster.
"""

import dataclasses
import json
import time

from simclrv2.config.run_config import RunConfig
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset
from simclrv2.steps.distill import distill
from simclrv2.steps.evaluate import evaluate
from simclrv2.steps.finetune import finetune
from simclrv2.steps.pretrain import pretrain
from simclrv2.steps.pseudolabel import pseudolabel
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import join_uri


def run_chain(
    config: RunConfig,
    output: str,
    source: str = "fashion-mnist",
    label_subset: LabelSubsetSpec | None = None,
    store: ObjectStore | None = None,
    print_fn=print,
) -> dict:
    """Run every step into `output`/<step>; returns the evaluate step's metrics."""
    started = time.perf_counter()
    store = store or ObjectStore()
    folder = {step: join_uri(output, step) for step in (
        "data", "pretrain", "finetune", "supervised", "pseudolabels", "distill", "evaluate",
    )}  # fmt: skip
    if not config.data.dataset:
        labels = label_subset or LabelSubsetSpec(fraction=0.01, seed=config.runtime.seed)
        print_fn(f"[chain] 1/6 shard {source} -> {folder['data']}")
        shard_dataset(ShardRequest(source, folder["data"], labels, seed=config.runtime.seed), store)
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, dataset=folder["data"])
        )
    print_fn("[chain] 2/6 pretrain")
    pretrained = pretrain(config, folder["pretrain"], store=store, print_fn=print_fn)
    print_fn("[chain] 3/6 finetune (teacher) and the supervised baseline")
    teacher = finetune(config, folder["finetune"], pretrained.model_uri, store=store,
                       print_fn=print_fn)  # fmt: skip
    scratch = dataclasses.replace(
        config, finetune=dataclasses.replace(config.finetune, from_scratch=True)
    )
    baseline = finetune(scratch, folder["supervised"], store=store, print_fn=print_fn)
    print_fn("[chain] 4/6 pseudolabel")
    pseudolabel(config, teacher.model_uri, folder["pseudolabels"], store=store, print_fn=print_fn)
    print_fn("[chain] 5/6 distill")
    student = distill(config, folder["distill"], teacher.model_uri, folder["pseudolabels"],
                      store=store, print_fn=print_fn)  # fmt: skip
    print_fn("[chain] 6/6 evaluate")
    models = {
        "teacher": teacher.model_uri,
        "student": student.model_uri,
        "supervised": baseline.model_uri,
    }
    metrics = evaluate(config, models, folder["evaluate"], store=store, print_fn=print_fn,
                       pretrained=pretrained.model_uri)  # fmt: skip
    seconds = time.perf_counter() - started
    summary = {name: metrics["models"][name]["top1"] for name in models}
    store.write_bytes(
        join_uri(output, "summary.json"),
        json.dumps({"top1": summary, "seconds": round(seconds, 1)}, indent=2).encode(),
    )
    print_fn(f"\n[chain] done in {seconds / 60:.1f} min; outputs under {output}/")
    return metrics
