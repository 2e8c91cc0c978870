"""The official SimCLRv2 network's weight-holding layers, in the order the official code
creates them, each with the name of our module that holds the same weights.

Both released layouts are derived from this one list (variable_names.py):
- TF2 (tf2/resnet.py, tf2/model.py): object paths such as
  `resnet_model/block_groups/0/layers/0/conv_relu_dropblock_layers/0/conv2d`; list indices
  count every sub-layer, including the weight-free ones (padding, pooling, DropBlock, identity);
- TF1 (resnet.py, model_util.py): `tf.layers` names inside `base_model/`, numbered in creation
  order (`conv2d`, `conv2d_1`, ..., `batch_normalization_N`).
"""

from dataclasses import dataclass

from simclrv2.models.resnet import STAGE_BLOCKS, EncoderConfig

CONV = "conv"
BATCH_NORM = "batch_norm"
DENSE = "dense"


@dataclass(frozen=True)
class OfficialLayer:
    kind: str  # CONV, BATCH_NORM or DENSE
    ours: str  # our module's state_dict prefix, e.g. "encoder.stem.0"
    tf2_path: str  # the official TF2 object path of the layer holding the variables
    tf1_scope: str = ""  # set for head layers, whose TF1 scope is named, not numbered
    center: bool = True  # BN with beta / dense with bias


def _conv(ours: str, path: str) -> OfficialLayer:
    """Conv2dFixedPadding: the Keras Conv2D sits in its `conv2d` attribute."""
    return OfficialLayer(CONV, ours, f"{path}/conv2d")


def _bn(ours: str, path: str) -> OfficialLayer:
    """BatchNormRelu: the Keras BatchNormalization sits in its `bn` attribute."""
    return OfficialLayer(BATCH_NORM, ours, f"{path}/bn")


def _stem(config: EncoderConfig, root: str) -> list[OfficialLayer]:
    path = f"{root}/initial_conv_relu_max_pool"
    if config.cifar_stem:  # conv, identity, BN
        return [_conv("stem.0", f"{path}/0"), _bn("stem.1", f"{path}/2")]
    if config.sk_ratio > 0:  # conv, BN, conv, BN, conv, identity, BN (ResNet-D)
        return [
            _conv("stem.0", f"{path}/0"),
            _bn("stem.1", f"{path}/1"),
            _conv("stem.3", f"{path}/2"),
            _bn("stem.4", f"{path}/3"),
            _conv("stem.6", f"{path}/4"),
            _bn("stem.7", f"{path}/6"),
        ]
    return [_conv("stem.0", f"{path}/0"), _bn("stem.1", f"{path}/2")]  # conv, identity, BN


def _shortcut(ours: str, path: str, stride: int, resnet_d: bool) -> list[OfficialLayer]:
    if not resnet_d:  # conv, BN
        return [_conv(f"{ours}.0", f"{path}/0"), _bn(f"{ours}.1", f"{path}/1")]
    first = 2 if stride > 1 else 1  # [fixed padding,] average pooling, conv, BN
    return [_conv(f"{ours}.1", f"{path}/{first}"), _bn(f"{ours}.2", f"{path}/{first + 1}")]


def _bottleneck(ours: str, path: str, stride: int, projection: bool, sk: bool) -> list:
    layers = []
    if projection:
        layers += _shortcut(f"{ours}.shortcut", f"{path}/projection_layers", stride, sk)
    main = f"{path}/conv_relu_dropblock_layers"
    # conv 1x1, BN, DropBlock, then SK (one layer) or conv 3x3 + BN, DropBlock, conv, BN, ...
    layers += [_conv(f"{ours}.conv1", f"{main}/0"), _bn(f"{ours}.bn1", f"{main}/1")]
    if sk:
        sk_path = f"{main}/3"
        layers += [
            _conv(f"{ours}.conv2.conv", f"{sk_path}/conv2d_fixed_padding"),
            _bn(f"{ours}.conv2.bn", f"{sk_path}/batch_norm_relu"),
            OfficialLayer(CONV, f"{ours}.conv2.attention_reduce", f"{sk_path}/conv2d_0"),
            _bn(f"{ours}.conv2.attention_bn", f"{sk_path}/batch_norm_relu_1"),
            OfficialLayer(CONV, f"{ours}.conv2.attention_expand", f"{sk_path}/conv2d_1"),
        ]
        last = 5
    else:
        layers += [_conv(f"{ours}.conv2.0", f"{main}/3"), _bn(f"{ours}.conv2.1", f"{main}/4")]
        last = 6
    layers += [_conv(f"{ours}.conv3", f"{main}/{last}"), _bn(f"{ours}.bn3", f"{main}/{last + 1}")]
    return layers


def _basic(ours: str, path: str, stride: int, projection: bool, sk: bool) -> list:
    layers = []
    if projection:
        layers += _shortcut(f"{ours}.shortcut", f"{path}/shortcut_layers", stride, sk)
    main = f"{path}/conv2d_bn_layers"
    return [
        *layers,
        _conv(f"{ours}.conv1", f"{main}/0"),
        _bn(f"{ours}.bn1", f"{main}/1"),
        _conv(f"{ours}.conv2", f"{main}/2"),
        _bn(f"{ours}.bn2", f"{main}/3"),
    ]


def encoder_layers(config: EncoderConfig, ours: str = "encoder") -> list[OfficialLayer]:
    root = "resnet_model"
    layers = [
        OfficialLayer(layer.kind, f"{ours}.{layer.ours}", layer.tf2_path)
        for layer in _stem(config, root)
    ]
    kind, blocks_per_stage = STAGE_BLOCKS[config.depth]
    block = _bottleneck if kind == "bottleneck" else _basic
    for stage, num_blocks in enumerate(blocks_per_stage):
        for index in range(num_blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            for layer in block(
                f"{ours}.stages.{stage}.{index}",
                f"{root}/block_groups/{stage}/layers/{index}",
                stride,
                index == 0,
                config.sk_ratio > 0,
            ):
                layers.append(layer)
    return layers


def head_layers(num_layers: int, ours: str) -> list[OfficialLayer]:
    """The projection head: LinearLayer j has `dense` and `bn_relu/bn` (no beta in the last)."""
    layers = []
    for j in range(num_layers):
        path = f"_projection_head/linear_layers/{j}"
        scope = f"head_contrastive/nl_{j}"
        layers += [
            OfficialLayer(DENSE, f"{ours}.{j}.linear", f"{path}/dense", scope, center=False),
            OfficialLayer(
                BATCH_NORM, f"{ours}.{j}.bn", f"{path}/bn_relu/bn", scope, j < num_layers - 1
            ),
        ]
    return layers


def supervised_head_layer(ours: str = "classifier") -> OfficialLayer:
    return OfficialLayer(
        DENSE, ours, "supervised_head/linear_layer/dense", "head_supervised/linear_layer"
    )
