"""The run configuration: every hyper-parameter of every training step, explicit.

One YAML file configures a whole run; each step reads its section plus the shared ones
(data, model, runtime). Defaults are SimCLRv2's (docs/method-notes.md has each with its
source): pretraining LARS 0.075 x sqrt(batch), weight decay 1e-4 (the SimCLRv2 command of the
google-research/simclr README; the tf2 flag defaults, 0.3 x batch/256 and 1e-6, are SimCLRv1's),
warmup 10 epochs, tau 0.1, colour strength 1.0; fine-tuning from projection layer 1 with LARS
0.005 x sqrt(batch), no decay, no warmup; distillation on the pretraining schedule at tau 1.0
(big-to-small), labels not mixed in.
"""

from dataclasses import dataclass, field
from typing import Literal

from simclrv2.models.resnet import EncoderConfig
from simclrv2.storage.retry_budget import S3RetryBudget


def _positive(section: str, **values) -> None:
    for name, value in values.items():
        if value is None or value <= 0:
            raise ValueError(f"{section}.{name} must be > 0, got {value}")


@dataclass(frozen=True)
class DataSettings:
    dataset: str = ""  # where the shard step published (its --output), local or s3://
    image_size: int = 28
    image_mode: Literal["gray", "rgb"] | None = None  # None: as stored
    num_workers: int = 2
    shuffle_buffer: int = 1000
    max_corrupt_fraction: float = 0.01
    # Where training augmentations run (simclrv2/data/step_data.py): cpu = per image in the
    # DataLoader workers; gpu = as one batch on the training device (the GPU; on a machine
    # without one, the CPU); auto = gpu when training on CUDA, else cpu.
    pipeline: Literal["cpu", "gpu", "auto"] = "auto"

    def __post_init__(self):
        _positive("data", image_size=self.image_size)
        if self.pipeline not in ("cpu", "gpu", "auto"):
            raise ValueError(f"data.pipeline must be cpu, gpu or auto, got {self.pipeline!r}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if not 0 <= self.max_corrupt_fraction <= 1:
            raise ValueError(
                f"data.max_corrupt_fraction must be in [0, 1], got {self.max_corrupt_fraction}"
            )

    @property
    def channels(self) -> int:
        return 1 if self.image_mode == "gray" else 3


@dataclass(frozen=True)
class EncoderSettings:
    depth: int = 50
    width_multiplier: float = 1.0
    sk_ratio: float = 0.0
    cifar_stem: bool | None = None  # None: on for images of 32 px or less, as the reference

    def encoder_config(self, data: DataSettings) -> EncoderConfig:
        cifar_stem = data.image_size <= 32 if self.cifar_stem is None else self.cifar_stem
        return EncoderConfig(
            self.depth, self.width_multiplier, self.sk_ratio, cifar_stem, data.channels
        )


@dataclass(frozen=True)
class ModelSettings:
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    num_proj_layers: int = 3
    proj_out_dim: int = 128

    def __post_init__(self):
        _positive("model", num_proj_layers=self.num_proj_layers, proj_out_dim=self.proj_out_dim)


@dataclass(frozen=True)
class OptimizerSettings:
    epochs: int = 100
    batch_size: int = 512  # global: over all processes
    base_learning_rate: float = 0.075
    learning_rate_scaling: Literal["linear", "sqrt"] = "sqrt"
    warmup_epochs: float = 10.0
    weight_decay: float = 1e-4
    momentum: float = 0.9
    trust_coefficient: float = 0.001  # LARS eeta
    # Budgets that hold at any dataset size (simclrv2/training/step_budget.py): epochs are
    # raised until the stage runs at least min_steps optimizer steps (warmup keeps its share
    # of the run); warmup_steps > 0 sets the warmup in steps instead of warmup_epochs.
    min_steps: int = 0
    warmup_steps: int = 0

    def __post_init__(self):
        _positive(
            "optimizer",
            epochs=self.epochs,
            batch_size=self.batch_size,
            base_learning_rate=self.base_learning_rate,
        )
        for name in ("warmup_epochs", "weight_decay", "momentum", "trust_coefficient",
                     "min_steps", "warmup_steps"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"optimizer.{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"optimizer.warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})"
            )


@dataclass(frozen=True)
class MocoSettings:
    """The paper's optional memory: EMA encoder + queue of negatives (off by default)."""

    enabled: bool = False
    momentum: float = 0.999
    queue_size: int = 65536

    def __post_init__(self):
        if not 0 <= self.momentum < 1:
            raise ValueError(f"pretrain.moco.momentum must be in [0, 1), got {self.momentum}")
        _positive("pretrain.moco", queue_size=self.queue_size)


@dataclass(frozen=True)
class KnnMonitorSettings:
    """Weighted kNN top-1 of the encoder during pretraining (simclrv2/evaluation/knn.py):
    the labeled split is the memory, the test split the queries; no labels train anything."""

    every_epochs: int = 0  # 0: off; N: after every N-th epoch (and the last)
    k: int = 200
    temperature: float = 0.1

    def __post_init__(self):
        if self.every_epochs < 0:
            raise ValueError(f"pretrain.knn.every_epochs must be >= 0, got {self.every_epochs}")
        _positive("pretrain.knn", k=self.k, temperature=self.temperature)


@dataclass(frozen=True)
class PretrainSettings:
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    temperature: float = 0.1
    color_jitter_strength: float = 1.0
    blur: bool | None = None  # None: on for images over 32 px
    moco: MocoSettings = field(default_factory=MocoSettings)
    knn: KnnMonitorSettings = field(default_factory=KnnMonitorSettings)

    def __post_init__(self):
        _positive("pretrain", temperature=self.temperature)


def _finetune_optimizer() -> OptimizerSettings:
    return OptimizerSettings(
        epochs=60,
        batch_size=1024,
        base_learning_rate=0.005,
        learning_rate_scaling="sqrt",
        warmup_epochs=0.0,
        weight_decay=0.0,
    )


@dataclass(frozen=True)
class FinetuneSettings:
    optimizer: OptimizerSettings = field(default_factory=_finetune_optimizer)
    # Fine-tune from the output of this projection layer: 0 = the encoder, 1 = the paper's
    # choice, num_proj_layers (or -1, as the reference's ft_proj_selector) = the whole head.
    proj_layers: int = 1
    # The supervised baseline: no pretrained weights, trained with the `supervised` section's
    # recipe instead of this section's optimizer.
    from_scratch: bool = False

    def __post_init__(self):
        if self.proj_layers < -1:
            raise ValueError(
                f"finetune.proj_layers must be >= 0, or -1 for the whole head; "
                f"got {self.proj_layers}"
            )


def _supervised_optimizer() -> OptimizerSettings:
    # The rate was chosen by benchmarks/label_efficiency.py's grid on a held-out fifth of the
    # labeled images, at 1 % and 10 % of Fashion-MNIST (docs/method-notes.md, "The supervised
    # baseline"): linear scaling per 256 images, warmup over the first 5% of the run, then
    # cosine; at least 1,500 steps.
    return OptimizerSettings(
        epochs=100,
        batch_size=128,
        base_learning_rate=0.4,
        learning_rate_scaling="linear",
        warmup_epochs=5.0,
        weight_decay=5e-4,
        momentum=0.9,
        min_steps=1500,
    )


@dataclass(frozen=True)
class SupervisedSettings:
    """The supervised baseline's own recipe: the same network from random weights on the
    same labels, trained as one trains from scratch (SGD with Nesterov momentum and weight
    decay on every parameter), not with the fine-tuning recipe, which would flatter the gap."""

    optimizer: OptimizerSettings = field(default_factory=_supervised_optimizer)
    algorithm: Literal["sgd", "lars"] = "sgd"  # lars: the fine-tuning optimizer, for comparison

    def __post_init__(self):
        if self.algorithm not in ("sgd", "lars"):
            raise ValueError(f"supervised.algorithm must be sgd or lars, got {self.algorithm!r}")


@dataclass(frozen=True)
class DistillSettings:
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    # The paper uses 0.1 for self-distillation; at the quick start's learning rate 0.1
    # collapsed the student to chance, 1.0 did not (docs/method-notes.md, "Distillation at
    # small scale").
    temperature: float = 1.0
    alpha: float = 0.0  # weight of the labeled loss; the paper's default uses none
    student: EncoderSettings | None = None  # None: same encoder as the teacher
    # online: the teacher runs inside distill on the student's own augmented view (the
    # paper's Eq. 2: teacher and student see the same image), at the cost of a teacher
    # forward pass per step; stored: targets are the pseudolabel step's teacher logits of
    # each image's centre crop. Online measured 75.53 vs 73.81 % top-1 on Fashion-MNIST
    # with 1 % labels (benchmarks/label_efficiency.py, seed 0), so it is the default.
    teacher: Literal["stored", "online"] = "online"

    def __post_init__(self):
        _positive("distill", temperature=self.temperature)
        if self.teacher not in ("stored", "online"):
            raise ValueError(f"distill.teacher must be stored or online, got {self.teacher!r}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"distill.alpha must be in [0, 1], got {self.alpha}")


@dataclass(frozen=True)
class PromotionSettings:
    """The promotion gate (simclrv2/pipeline_support/promotion_gate.py): a candidate becomes
    the production model only when every rule holds. Margins are top-1 fractions (0.05 = 5
    points)."""

    candidate: Literal["student", "teacher", "best"] = "student"  # best: student, else teacher
    max_below_teacher: float = 0.05  # how far the student may trail its teacher
    min_above_supervised: float = 0.0  # must beat the run's supervised baseline by more
    min_above_chance: float = 0.10  # must reach 1/classes + this
    min_gain_over_production: float = 0.0  # must beat production by more than this

    def __post_init__(self):
        if self.candidate not in ("student", "teacher", "best"):
            raise ValueError(
                f"promotion.candidate must be student, teacher or best, got {self.candidate!r}"
            )
        for name in ("max_below_teacher", "min_above_supervised", "min_above_chance",
                     "min_gain_over_production"):  # fmt: skip
            value = getattr(self, name)
            if not -1 <= value <= 1:
                raise ValueError(f"promotion.{name} is a top-1 fraction in [-1, 1], got {value}")


@dataclass(frozen=True)
class RuntimeSettings:
    device: str = "auto"  # auto: cuda when present
    channels_last: bool = True
    bf16: bool | None = None  # None: where the hardware computes bf16 natively
    global_bn: bool = True  # batch statistics over all processes (SyncBatchNorm)
    # torch.compile the model (TorchInductor). Off by default: on this project's 2-core CPU it
    # measured 1.1x on the quick start's step after a 58 s compile; measure your GPU with
    # benchmarks/gpu_throughput.py, which reports the step with and without it.
    compile: bool = False
    seed: int = 0
    checkpoint_every_steps: int = 100
    keep_checkpoints: int = 3
    log_every_steps: int = 10
    metrics_port: int | None = None  # serve /metrics here when no Pushgateway is set
    pushgateway_url: str | None = None  # default: $PUSHGATEWAY_URL
    # > 0: fail once, on the first attempt, right after the first checkpoint at or after this
    # global step (simclrv2/training/fault_injection.py); proves that retries resume. 0: off.
    inject_failure_at_step: int = 0

    def __post_init__(self):
        _positive(
            "runtime",
            checkpoint_every_steps=self.checkpoint_every_steps,
            keep_checkpoints=self.keep_checkpoints,
            log_every_steps=self.log_every_steps,
        )
        if self.inject_failure_at_step < 0:
            raise ValueError(
                f"runtime.inject_failure_at_step must be >= 0 (0: off), "
                f"got {self.inject_failure_at_step}"
            )


@dataclass(frozen=True)
class RunConfig:
    run_id: str = ""  # groups metrics and names outputs; empty: derived by the step
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    supervised: SupervisedSettings = field(default_factory=SupervisedSettings)
    distill: DistillSettings = field(default_factory=DistillSettings)
    promotion: PromotionSettings = field(default_factory=PromotionSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    # How long S3 operations wait out a storage outage, and their timeouts (defaults and
    # their reasons: simclrv2/storage/retry_budget.py, docs/storage-faults.md).
    storage: S3RetryBudget = field(default_factory=S3RetryBudget)

    def __post_init__(self):
        if self.finetune.proj_layers > self.model.num_proj_layers:
            raise ValueError(
                f"finetune.proj_layers {self.finetune.proj_layers} is more than the "
                f"{self.model.num_proj_layers} layers of the projection head "
                "(model.num_proj_layers; the paper fine-tunes from layer 1)"
            )
        # Build the encoders once here so impossible architectures fail before any work.
        self.model.encoder.encoder_config(self.data)
        if self.distill.student is not None:
            self.distill.student.encoder_config(self.data)
