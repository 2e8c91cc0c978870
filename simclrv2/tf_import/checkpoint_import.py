"""Turn a released SimCLRv2 TensorFlow checkpoint (TF1 or TF2) into our model.

The architecture is read from the variables themselves: every supported (depth, SK, stem)
is tried and the one whose variable names and shapes all match is built; the width comes
from the first block's shapes, the head's size from its layers. Every variable of the
checkpoint is then either copied into the model or ignored by a named rule (optimizer
state, step counters, EMA copies not asked for, heads the output does not keep); anything
else, and any shape that does not fit, is an error that names the variable.
"""

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from simclrv2.errors import UsageError
from simclrv2.models.resnet import STAGE_BLOCKS, EncoderConfig, ResNet
from simclrv2.models.simclr_model import Classifier, ContrastiveModel, ModelConfig
from simclrv2.tf_import.bundle_reader import TensorBundle
from simclrv2.tf_import.object_graph import OBJECT_GRAPH_KEY, variable_paths
from simclrv2.tf_import.official_layers import (
    encoder_layers,
    head_layers,
    supervised_head_layer,
)
from simclrv2.tf_import.variable_names import VariableName, variable_names

OFFICIAL_SK_RATIO = 0.0625  # every released SK model; other ratios fail the shape check
TF2_ROOTS = ("resnet_model/", "_projection_head/", "supervised_head/")
TF1_ROOTS = ("base_model/", "head_contrastive/", "head_supervised/")
EMA_SUFFIX = "/ExponentialMovingAverage"

# Variables that hold no model weights, by rule: (rule, pattern on the checkpoint key).
IGNORE_RULES = [
    ("checkpoint object graph", re.compile(rf"^{OBJECT_GRAPH_KEY}$")),
    ("step counter", re.compile(r"(^|/)(global_step|save_counter)(/|$)")),
    ("optimizer slot", re.compile(r"/\.OPTIMIZER_SLOT/|/Momentum(_\d+)?$|/LARS(Optimizer)?$")),
    ("optimizer state", re.compile(r"^optimizer/")),
]


class CheckpointMappingError(UsageError):
    """The checkpoint is not one of the official SimCLRv2 networks (or not all of it maps)."""


@dataclass
class ImportResult:
    model: nn.Module
    layout: str  # "tf1" or "tf2"
    encoder: EncoderConfig
    num_proj_layers: int
    num_classes: int | None  # of the supervised head, when the checkpoint has one
    used_ema: bool
    mapped: int = 0
    ignored: dict[str, list[str]] = field(default_factory=dict)  # rule -> checkpoint keys

    def summary(self) -> str:
        config = self.encoder
        sk = " + SK" if config.sk_ratio > 0 else ""
        width = f"{config.width_multiplier:g}x"
        kind = "classifier" if isinstance(self.model, Classifier) else "contrastive model"
        ignored = ", ".join(f"{len(keys)} {rule}" for rule, keys in sorted(self.ignored.items()))
        return (
            f"{self.layout.upper()} checkpoint: ResNet-{config.depth} {width}{sk}, "
            f"{self.num_proj_layers}-layer projection head"
            + (f", supervised head of {self.num_classes} classes" if self.num_classes else "")
            + f" -> {kind}; {self.mapped} variables mapped"
            + (" (EMA weights)" if self.used_ema else "")
            + (f"; ignored: {ignored}" if ignored else "")
        )


def _model_variables(bundle: TensorBundle) -> tuple[str, dict[str, str], set[str]]:
    """(layout, official name -> checkpoint key, every key that holds a model variable)."""
    names = bundle.names()
    if any(name.startswith(TF1_ROOTS) for name in names):
        present = {name: name for name in names if name.startswith(TF1_ROOTS)}
        return "tf1", present, set(present.values())
    if OBJECT_GRAPH_KEY in bundle.entries:
        (graph,) = bundle.read_strings(OBJECT_GRAPH_KEY)
        present = {}
        for key, paths in variable_paths(graph).items():
            for path in paths:
                if "/.OPTIMIZER_SLOT/" in path:
                    continue
                starts = [path.find(f"/{root}") + 1 for root in TF2_ROOTS if f"/{root}" in path]
                starts += [0 for root in TF2_ROOTS if path.startswith(root)]
                if starts:
                    present.setdefault(path[min(starts) :], key)
        return "tf2", present, set(present.values())
    raise CheckpointMappingError(
        f"{bundle.prefix} holds no SimCLRv2 network: no variable under base_model/ (TF1) and no "
        "TF2 object graph; pass a checkpoint of google-research/simclr (v2)"
    )


def _names(layout: str, names: list[VariableName]) -> dict[str, VariableName]:
    return {(name.tf1 if layout == "tf1" else name.tf2): name for name in names}


def _shape(bundle: TensorBundle, key: str) -> tuple[int, ...]:
    return bundle.entries[key].shape


def _first_conv(layout: str, config: EncoderConfig) -> str:
    """The stem's first kernel (HWIO): its input channels are the images' (3 for RGB)."""
    name = variable_names(encoder_layers(config))[0]
    return name.tf1 if layout == "tf1" else name.tf2


def _stage0_conv1(layout: str, config: EncoderConfig) -> str:
    name = next(n for n in variable_names(encoder_layers(config)) if ".stages.0.0.conv1." in n.ours)
    return name.tf1 if layout == "tf1" else name.tf2


def _encoder_config(bundle: TensorBundle, layout: str, present: dict[str, str]) -> EncoderConfig:
    """The supported encoder that explains the most of the checkpoint's encoder variables with
    the right shapes (a ResNet-50's names are a subset of a ResNet-101's); variables left over
    are reported later as unmapped."""
    root = TF1_ROOTS[0] if layout == "tf1" else TF2_ROOTS[0]
    encoder_names = {name for name in present if name.startswith(root)}
    fitting: list[tuple[int, EncoderConfig]] = []
    mismatches = []
    for depth in STAGE_BLOCKS:
        for sk_ratio in (0.0, OFFICIAL_SK_RATIO):
            for cifar_stem in (False, True):
                probe = EncoderConfig(depth, 1.0, sk_ratio, cifar_stem)
                expected = _names(layout, variable_names(encoder_layers(probe)))
                if not set(expected) <= encoder_names:
                    continue
                out_channels = _shape(bundle, present[_stage0_conv1(layout, probe)])[-1]
                in_channels = _shape(bundle, present[_first_conv(layout, probe)])[2]
                try:
                    width = out_channels / 64
                    config = EncoderConfig(depth, width, sk_ratio, cifar_stem, in_channels)
                except ValueError:
                    continue
                mismatch = _shape_mismatch(bundle, present, layout, config)
                if mismatch is None:
                    fitting.append((len(expected), config))
                else:
                    mismatches.append((len(expected), mismatch))
    if fitting:
        return max(fitting, key=lambda pair: pair[0])[1]
    if mismatches:
        raise CheckpointMappingError(f"{bundle.prefix}: {max(mismatches)[1]}")
    raise CheckpointMappingError(
        f"{bundle.prefix}: no supported network has its {len(encoder_names)} encoder variables "
        "(supported: the official ResNet-18/34/50/101/152/200, any width, with or without SK); "
        "is it a SimCLRv2 checkpoint of google-research/simclr?"
    )


def _shape_mismatch(bundle, present, layout, config: EncoderConfig) -> str | None:
    """The first encoder variable whose shape does not fit `config`, described, or None."""
    with torch.device("meta"):  # shapes only: no memory, no (slow) initialisation
        model = nn.Module()
        model.encoder = ResNet(config)
    ours = model.state_dict()
    for name in variable_names(encoder_layers(config)):
        key = present[name.tf1 if layout == "tf1" else name.tf2]
        expected = name.tf_shape(ours[name.ours].shape)
        if _shape(bundle, key) != expected:
            return (
                f"variable {key!r} has shape {list(_shape(bundle, key))}; the "
                f"ResNet-{config.depth} {config.width_multiplier:g}x"
                f"{' + SK' if config.sk_ratio else ''} its other variables describe needs "
                f"{list(expected)} ({name.ours})"
            )
    return None


def _count_head_layers(present: dict[str, str], layout: str) -> int:
    pattern = re.compile(
        r"^head_contrastive/nl_(\d+)/"
        if layout == "tf1"
        else r"^_projection_head/linear_layers/(\d+)/"
    )
    indices = {int(m.group(1)) for name in present if (m := pattern.match(name))}
    return len(indices)


def import_checkpoint(
    bundle: TensorBundle,
    contrastive: bool = False,
    fine_tune_layer: int | None = None,
    use_ema: bool = False,
) -> ImportResult:
    """The model in `bundle`: a Classifier when it has a supervised head (fed by projection
    layer `fine_tune_layer`: by default 1, as in the released fine-tuned models, or 0 when
    there is no projection head); otherwise, or with `contrastive`, a ContrastiveModel
    (encoder + whole projection head). `use_ema`: the TF1 EMA copies instead of the weights."""
    layout, present, model_keys = _model_variables(bundle)
    encoder = _encoder_config(bundle, layout, present)
    num_proj_layers = _count_head_layers(present, layout)
    head_variables = variable_names(head_layers(num_proj_layers, "head"))
    head_names = _names(layout, head_variables)
    supervised = _names(layout, variable_names([supervised_head_layer()]))
    has_supervised = all(name in present for name in supervised)
    num_classes = _shape(bundle, present[next(iter(supervised))])[-1] if has_supervised else None
    proj_out_dim = 128
    if num_proj_layers:
        last_kernel = f"head.{num_proj_layers - 1}.linear.weight"
        (last,) = (name for name in head_variables if name.ours == last_kernel)
        last_key = present.get(last.tf1 if layout == "tf1" else last.tf2)
        if last_key is None:
            raise CheckpointMappingError(f"{bundle.prefix}: projection head layer lacks its kernel")
        proj_out_dim = _shape(bundle, last_key)[-1]
    if fine_tune_layer is None:
        fine_tune_layer = min(1, num_proj_layers)

    if has_supervised and not contrastive:
        if not 0 <= fine_tune_layer <= num_proj_layers:
            raise CheckpointMappingError(
                f"fine-tune layer {fine_tune_layer} is not in 0..{num_proj_layers}, the "
                "checkpoint's projection head layers"
            )
        with torch.device("meta"):  # every weight comes from the checkpoint
            model = Classifier(
                encoder, num_classes, fine_tune_layer, max(num_proj_layers, 1), True, proj_out_dim
            )
        layers = [
            *encoder_layers(encoder),
            *head_layers(num_proj_layers, "projection_layers")[: 2 * fine_tune_layer],
            supervised_head_layer("classifier"),
        ]
        dropped = "projection layer unused by a classifier fine-tuned from layer k"
    else:
        if num_proj_layers == 0:
            raise CheckpointMappingError(
                f"{bundle.prefix} has no projection head and no supervised head: nothing to "
                "build a SimCLRv2 model from (a SimCLRv1 checkpoint?)"
            )
        with torch.device("meta"):
            model = ContrastiveModel(ModelConfig(encoder, num_proj_layers, proj_out_dim))
        layers = [*encoder_layers(encoder), *head_layers(num_proj_layers, "projection_head.layers")]
        dropped = "supervised head (not kept in a contrastive model)"
    mapping = _names(layout, variable_names(layers))
    unused_model_names = set(head_names) | set(supervised)

    result = ImportResult(model, layout, encoder, num_proj_layers, num_classes, use_ema)
    state = model.state_dict()
    loaded = {}
    used_keys = set()
    for official, name in mapping.items():
        key = present.get(official)
        if key is None:
            raise CheckpointMappingError(f"{bundle.prefix} lacks variable {official!r}")
        if use_ema and f"{key}{EMA_SUFFIX}" in bundle.entries:
            used_keys.add(key)
            key = f"{key}{EMA_SUFFIX}"
        expected = name.tf_shape(state[name.ours].shape)
        if _shape(bundle, key) != expected:
            raise CheckpointMappingError(
                f"variable {key!r} has shape {list(_shape(bundle, key))}; {name.ours} of the "
                f"detected network needs {list(expected)}"
            )
        loaded[name.ours] = name.to_ours(bundle.read(key))
        used_keys.add(key)
    if use_ema and not any(key.endswith(EMA_SUFFIX) for key in used_keys):
        raise CheckpointMappingError(
            f"{bundle.prefix} has no exponential moving averages (variables ending in "
            f"{EMA_SUFFIX}, written by TF1 training with EMA); drop --ema"
        )
    mapped_keys = {present[official] for official in mapping}
    dropped_keys = {present[name] for name in unused_model_names if name in present} - mapped_keys
    unknown = []
    for key in bundle.names():
        if key in used_keys:
            continue
        base = key.removesuffix(EMA_SUFFIX)
        if key in dropped_keys or base in dropped_keys:
            rule = dropped
        elif layout == "tf2" and key in model_keys:
            rule = None  # a model variable is never optimizer state, whatever its key says
        elif key.endswith(EMA_SUFFIX) and base in bundle.entries:
            rule = "exponential moving average (--ema uses it)"
        else:
            rule = next((rule for rule, pattern in IGNORE_RULES if pattern.search(key)), None)
        if rule is None:
            unknown.append(key)
        else:
            result.ignored.setdefault(rule, []).append(key)
    if unknown:
        listed = ", ".join(repr(key) for key in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise CheckpointMappingError(
            f"{bundle.prefix}: {len(unknown)} variables are neither weights of the detected "
            f"network nor ignored by a rule: {listed}{more}"
        )
    for key in state:
        if key.endswith("num_batches_tracked"):  # not in TF; only used when momentum is None
            loaded[key] = torch.zeros((), dtype=torch.long)
    model.load_state_dict(loaded, strict=True, assign=True)
    model.eval()  # as load_model returns models: BN uses the checkpoint's statistics
    result.mapped = len(mapping)
    return result
