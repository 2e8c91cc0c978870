"""What a training step sets up before its first batch, the same way for every step:
process group and device, storage, batch split, precision, checkpoints, metrics, logging."""

from dataclasses import dataclass

from simclrv2.config.loading import dump_config
from simclrv2.config.run_config import OptimizerSettings, RunConfig
from simclrv2.distributed.context import (
    DistributedContext,
    expected_world_size,
    init_distributed,
)
from simclrv2.steps.training_setup import bf16_enabled, check_batch_divides, per_rank_batch
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import basename, join_uri
from simclrv2.training.checkpoint import CheckpointStore
from simclrv2.training.metrics import TrainingMetrics
from simclrv2.training.step_budget import StepBudget, plan_budget


@dataclass
class StepContext:
    name: str
    context: DistributedContext
    store: ObjectStore
    batch: int  # per process
    budget: StepBudget  # global batch, epochs, steps and warmup after sizing to the data
    bf16: bool
    checkpoints: CheckpointStore
    metrics: TrainingMetrics
    say: object  # print on rank 0, silent elsewhere


def start_step(
    name: str,
    config: RunConfig,
    settings: OptimizerSettings,
    samples: int,
    output: str,
    checkpoint_dir: str | None,
    store: ObjectStore | None,
    print_fn=print,
    section: str | None = None,  # the config section of `settings` when it is not `name`
) -> StepContext:
    # Checked before joining the process group: every process fails alike, none waits.
    where = f"{section or name}.optimizer"
    check_batch_divides(settings.batch_size, expected_world_size(), where)
    context = init_distributed(config.runtime.device)
    store = store or ObjectStore()
    store.use_retry_budget(config.storage)  # the run config's outage budget
    say = print_fn if context.is_main else (lambda *_: None)
    budget = plan_budget(name, samples, settings, context.world_size, section)
    batch = per_rank_batch(budget.batch_size, context)
    bf16 = bf16_enabled(config.runtime, context.device)
    checkpoints = CheckpointStore(
        checkpoint_dir or join_uri(output, "checkpoints"), store, config.runtime.keep_checkpoints
    )
    metrics = TrainingMetrics(
        name,
        config.run_id or basename(output.rstrip("/")) or name,
        config.runtime.pushgateway_url,
        config.runtime.metrics_port,
        enabled=context.is_main,
    )
    say(
        f"[{name}] {samples} images, {context.world_size} process(es) on {context.device}, "
        f"bf16 {bf16}, channels_last {config.runtime.channels_last}"
    )
    say(budget.describe(name, samples))
    say(f"[{name}] effective config:\n" + dump_config(config))
    return StepContext(name, context, store, batch, budget, bf16, checkpoints, metrics, say)
