"""An independent TensorFlow build of the official SimCLRv2 network, for the import tests.

It follows google-research/simclr (tf2/resnet.py, tf2/model.py; TF1 resnet.py, model_util.py)
layer by layer: the same object attribute names (so tf.train.Checkpoint writes the official
TF2 variable paths), the same creation order (from which the TF1 `tf.layers` names are
numbered), and the same inference arithmetic in NHWC with TensorFlow's own ops: fixed padding
before strided convolutions, 'SAME' elsewhere, the ResNet-D stem and average-pooled shortcut,
the SK convolution, BN with epsilon 1e-5, the 3-layer projection head and the supervised head.
Weights are random (BN statistics too), so equal outputs mean equal arithmetic.
"""

import numpy as np
import tensorflow as tf

BN_EPSILON = 1e-5
SK_RATIO = 0.0625
BLOCKS = {18: ("basic", [2, 2, 2, 2]), 50: ("bottleneck", [3, 4, 6, 3])}


class Registry:
    """Creates the variables with random values and remembers their TF1 names."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.counts = {"conv2d": 0, "batch_normalization": 0}
        self.tf1_names: dict[int, str] = {}  # id(variable) -> TF1 name

    def numbered(self, kind: str) -> str:
        count = self.counts[kind]
        self.counts[kind] += 1
        return f"base_model/{kind}_{count}" if count else f"base_model/{kind}"

    def variable(self, values: np.ndarray, tf1_name: str) -> tf.Variable:
        variable = tf.Variable(values.astype(np.float32))
        self.tf1_names[id(variable)] = tf1_name
        return variable


class Weightless(tf.Module):
    """Padding, pooling, DropBlock and identity layers: they take a list slot, hold nothing."""


class KerasConv(tf.Module):
    def __init__(self, registry: Registry, in_channels, filters, kernel_size, tf1_scope=None):
        super().__init__()
        scope = tf1_scope or registry.numbered("conv2d")
        std = np.sqrt(1.0 / (in_channels * kernel_size * kernel_size))  # VarianceScaling
        shape = (kernel_size, kernel_size, in_channels, filters)
        self.kernel = registry.variable(registry.rng.normal(0, std, shape), f"{scope}/kernel")


class ConvFixedPadding(tf.Module):
    def __init__(self, registry, in_channels, filters, kernel_size, stride):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.conv2d = KerasConv(registry, in_channels, filters, kernel_size)

    def __call__(self, x):
        if self.stride > 1:
            total = self.kernel_size - 1
            begin, end = total // 2, total - total // 2
            x = tf.pad(x, [[0, 0], [begin, end], [begin, end], [0, 0]])
            return tf.nn.conv2d(x, self.conv2d.kernel, self.stride, "VALID")
        return tf.nn.conv2d(x, self.conv2d.kernel, 1, "SAME")


class KerasBatchNorm(tf.Module):
    def __init__(self, registry, channels, center=True, scope=None):
        super().__init__()
        scope = scope or registry.numbered("batch_normalization")
        rng = registry.rng
        self.gamma = registry.variable(rng.uniform(0.5, 1.5, channels), f"{scope}/gamma")
        self.beta = (
            registry.variable(rng.normal(0, 0.1, channels), f"{scope}/beta") if center else None
        )
        self.moving_mean = registry.variable(rng.normal(0, 0.1, channels), f"{scope}/moving_mean")
        self.moving_variance = registry.variable(
            rng.uniform(0.5, 1.5, channels), f"{scope}/moving_variance"
        )

    def __call__(self, x):
        return tf.nn.batch_normalization(
            x, self.moving_mean, self.moving_variance, self.beta, self.gamma, BN_EPSILON
        )


class BatchNormRelu(tf.Module):
    def __init__(self, registry, channels, relu=True, center=True, scope=None):
        super().__init__()
        self.relu = relu
        self.bn = KerasBatchNorm(registry, channels, center, scope)

    def __call__(self, x):
        x = self.bn(x)
        return tf.nn.relu(x) if self.relu else x


class SelectiveKernel(tf.Module):
    def __init__(self, registry, in_channels, filters, stride):
        super().__init__()
        self.filters = filters
        self.conv2d_fixed_padding = ConvFixedPadding(registry, in_channels, 2 * filters, 3, stride)
        self.batch_norm_relu = BatchNormRelu(registry, 2 * filters)
        mid = max(int(filters * SK_RATIO), 32)
        self.conv2d_0 = KerasConv(registry, filters, mid, 1)
        self.batch_norm_relu_1 = BatchNormRelu(registry, mid)
        self.conv2d_1 = KerasConv(registry, mid, 2 * filters, 1)

    def __call__(self, x):
        x = self.batch_norm_relu(self.conv2d_fixed_padding(x))
        streams = tf.stack(tf.split(x, 2, axis=3))
        context = tf.reduce_mean(tf.reduce_sum(streams, axis=0), [1, 2], keepdims=True)
        context = self.batch_norm_relu_1(tf.nn.conv2d(context, self.conv2d_0.kernel, 1, "SAME"))
        mixing = tf.nn.conv2d(context, self.conv2d_1.kernel, 1, "SAME")
        mixing = tf.nn.softmax(tf.stack(tf.split(mixing, 2, axis=3)), axis=0)
        return tf.reduce_sum(streams * mixing, axis=0)


def _projection(registry, in_channels, filters_out, stride, sk):
    """The projection shortcut's list of layers, with the official list slots."""
    if not sk:
        return [
            ConvFixedPadding(registry, in_channels, filters_out, 1, stride),
            BatchNormRelu(registry, filters_out, relu=False),
        ]
    pooling = [Weightless(), Weightless()] if stride > 1 else [Weightless()]
    return [
        *pooling,
        ConvFixedPadding(registry, in_channels, filters_out, 1, 1),
        BatchNormRelu(registry, filters_out, relu=False),
    ]


def _shortcut(layers, x, stride, sk):
    if not layers:
        return x
    if sk:
        if stride > 1:
            x = tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])
            x = tf.nn.avg_pool2d(x, 2, stride, "VALID")
        else:
            x = tf.nn.avg_pool2d(x, 2, 1, "SAME")
    for layer in layers:
        if not isinstance(layer, Weightless):
            x = layer(x)
    return x


class Bottleneck(tf.Module):
    def __init__(self, registry, in_channels, filters, stride, projection, sk):
        super().__init__()
        self.stride, self.sk = stride, sk
        self.projection_layers = (
            _projection(registry, in_channels, 4 * filters, stride, sk) if projection else []
        )
        layers = [
            ConvFixedPadding(registry, in_channels, filters, 1, 1),
            BatchNormRelu(registry, filters),
            Weightless(),
        ]
        if sk:
            layers.append(SelectiveKernel(registry, filters, filters, stride))
        else:
            layers += [
                ConvFixedPadding(registry, filters, filters, 3, stride),
                BatchNormRelu(registry, filters),
            ]
        layers += [
            Weightless(),
            ConvFixedPadding(registry, filters, 4 * filters, 1, 1),
            BatchNormRelu(registry, 4 * filters, relu=False),
            Weightless(),
        ]
        self.conv_relu_dropblock_layers = layers

    def __call__(self, x):
        shortcut = _shortcut(self.projection_layers, x, self.stride, self.sk)
        for layer in self.conv_relu_dropblock_layers:
            if not isinstance(layer, Weightless):
                x = layer(x)
        return tf.nn.relu(x + shortcut)


class Basic(tf.Module):
    def __init__(self, registry, in_channels, filters, stride, projection, sk):
        super().__init__()
        self.stride, self.sk = stride, sk
        self.shortcut_layers = (
            _projection(registry, in_channels, filters, stride, sk) if projection else []
        )
        self.conv2d_bn_layers = [
            ConvFixedPadding(registry, in_channels, filters, 3, stride),
            BatchNormRelu(registry, filters),
            ConvFixedPadding(registry, filters, filters, 3, 1),
            BatchNormRelu(registry, filters, relu=False),
        ]

    def __call__(self, x):
        shortcut = _shortcut(self.shortcut_layers, x, self.stride, self.sk)
        for layer in self.conv2d_bn_layers:
            x = layer(x)
        return tf.nn.relu(x + shortcut)


class BlockGroup(tf.Module):
    def __init__(self, registry, block, in_channels, filters, count, stride, sk):
        super().__init__()
        expansion = 4 if block is Bottleneck else 1
        self.layers = [block(registry, in_channels, filters, stride, True, sk)]
        for _ in range(1, count):
            self.layers.append(block(registry, filters * expansion, filters, 1, False, sk))
        self.out_channels = filters * expansion

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Resnet(tf.Module):
    def __init__(self, registry, depth, width, sk, cifar_stem=False, in_channels=3):
        super().__init__()
        self.cifar_stem = cifar_stem
        base = int(64 * width)
        if cifar_stem:
            stem = [ConvFixedPadding(registry, in_channels, base, 3, 1), Weightless()]
            stem += [BatchNormRelu(registry, base), Weightless()]
        elif sk:
            stem = [
                ConvFixedPadding(registry, in_channels, base // 2, 3, 2),
                BatchNormRelu(registry, base // 2),
                ConvFixedPadding(registry, base // 2, base // 2, 3, 1),
                BatchNormRelu(registry, base // 2),
                ConvFixedPadding(registry, base // 2, base, 3, 1),
                Weightless(),
                BatchNormRelu(registry, base),
                Weightless(),
                Weightless(),
            ]
        else:
            stem = [ConvFixedPadding(registry, in_channels, base, 7, 2), Weightless()]
            stem += [BatchNormRelu(registry, base), Weightless(), Weightless()]
        self.initial_conv_relu_max_pool = stem
        kind, counts = BLOCKS[depth]
        block = Bottleneck if kind == "bottleneck" else Basic
        channels = base
        self.block_groups = []
        for stage, count in enumerate(counts):
            group = BlockGroup(
                registry, block, channels, base * 2**stage, count, 1 if stage == 0 else 2, sk
            )
            self.block_groups.append(group)
            channels = group.out_channels
        self.out_channels = channels

    def __call__(self, x):
        for layer in self.initial_conv_relu_max_pool:
            if not isinstance(layer, Weightless):
                x = layer(x)
        if not self.cifar_stem:
            x = tf.nn.max_pool2d(x, 3, 2, "SAME")
        for group in self.block_groups:
            x = group(x)
        return tf.reduce_mean(x, [1, 2])


class Dense(tf.Module):
    def __init__(self, registry, in_features, out_features, bias, scope):
        super().__init__()
        std = np.sqrt(1.0 / in_features)
        self.kernel = registry.variable(
            registry.rng.normal(0, std, (in_features, out_features)), f"{scope}/kernel"
        )
        if bias:
            self.bias = registry.variable(
                registry.rng.normal(0, 0.1, out_features), f"{scope}/bias"
            )
        else:
            self.bias = None

    def __call__(self, x):
        x = tf.matmul(x, self.kernel)
        return x + self.bias if self.bias is not None else x


class LinearLayer(tf.Module):
    def __init__(self, registry, in_features, out_features, use_bias, use_bn, scope):
        super().__init__()
        self.dense = Dense(
            registry, in_features, out_features, use_bias and not use_bn, f"{scope}/dense"
        )
        if use_bn:
            self.bn_relu = BatchNormRelu(
                registry, out_features, relu=False, center=use_bias,
                scope=f"{scope}/batch_normalization",
            )  # fmt: skip
        else:
            self.bn_relu = None

    def __call__(self, x):
        x = self.dense(x)
        return self.bn_relu(x) if self.bn_relu is not None else x


class ProjectionHead(tf.Module):
    def __init__(self, registry, width, num_layers=3, out_dim=128):
        super().__init__()
        self.linear_layers = []
        for j in range(num_layers):
            last = j == num_layers - 1
            self.linear_layers.append(
                LinearLayer(
                    registry,
                    width,
                    out_dim if last else width,
                    not last,
                    True,
                    f"head_contrastive/nl_{j}",
                )
            )

    def __call__(self, x):
        hiddens = [x]
        for j, layer in enumerate(self.linear_layers):
            x = layer(x)
            if j != len(self.linear_layers) - 1:
                x = tf.nn.relu(x)
            hiddens.append(x)
        return hiddens


class SupervisedHead(tf.Module):
    def __init__(self, registry, in_features, num_classes):
        super().__init__()
        self.linear_layer = LinearLayer(
            registry, in_features, num_classes, True, False, "head_supervised/linear_layer"
        )


class OfficialModel(tf.Module):
    """resnet_model + _projection_head (+ supervised_head), as the official tf2 Model."""

    def __init__(
        self, depth=50, width=1, sk=False, num_classes=None, seed=0, cifar_stem=False, in_channels=3
    ):
        super().__init__()
        self.registry = Registry(seed)
        self.resnet_model = Resnet(self.registry, depth, width, sk, cifar_stem, in_channels)
        width_out = self.resnet_model.out_channels
        self._projection_head = ProjectionHead(self.registry, width_out)
        if num_classes:
            self.supervised_head = SupervisedHead(self.registry, width_out, num_classes)

    def outputs(self, images_nchw: np.ndarray, fine_tune_layer: int = 1) -> dict[str, np.ndarray]:
        """Features, projection and (with a supervised head) logits of images in [0, 1]."""
        x = tf.constant(np.transpose(images_nchw, (0, 2, 3, 1)))
        features = self.resnet_model(x)
        hiddens = self._projection_head(features)
        result = {"features": features.numpy(), "projection": hiddens[-1].numpy()}
        if hasattr(self, "supervised_head"):
            logits = self.supervised_head.linear_layer(hiddens[fine_tune_layer])
            result["logits"] = logits.numpy()
        return result

    def write_tf2(self, prefix: str, with_optimizer: bool = True) -> str:
        """A TF2 object-based checkpoint as tf2/run.py writes it: model, global_step and the
        optimizer (Keras, with its momentum slots)."""
        objects = {"model": self, "global_step": tf.Variable(123, dtype=tf.int64)}
        if with_optimizer:
            optimizer = tf.keras.optimizers.SGD(0.1, momentum=0.9)
            variables = list(self.trainable_variables)
            optimizer.build(variables)
            objects["optimizer"] = optimizer
        return tf.train.Checkpoint(**objects).write(prefix)

    def tf1_variables(self, ema_offset: float | None = 0.5) -> dict[str, tf.Tensor]:
        """The variables of a TF1 name-based checkpoint (tf.train.Saver layout): each under
        its tf.layers name, a Momentum slot for each trainable one, global_step, and (unless
        ema_offset is None) an ExponentialMovingAverage copy shifted by ema_offset."""
        names, tensors = ["global_step"], [tf.constant(250228, tf.int64)]
        for variable in self.variables:
            if id(variable) not in self.registry.tf1_names:
                continue
            name = self.registry.tf1_names[id(variable)]
            names.append(name)
            tensors.append(variable.read_value())
            if "moving_" not in name:
                names.append(f"{name}/Momentum")
                tensors.append(tf.zeros_like(variable))
                if ema_offset is not None:
                    names.append(f"{name}/ExponentialMovingAverage")
                    tensors.append(variable + ema_offset)
        return dict(zip(names, tensors, strict=True))


def write_tf1(prefix: str, variables: dict[str, tf.Tensor]) -> str:
    """Save `variables` under their names with TF's own SaveV2 op, as tf.train.Saver does."""
    names = list(variables)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[variables[name] for name in names],
    )
    return prefix
