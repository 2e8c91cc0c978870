"""Each official layer's variables under their TF2 and TF1 names, with the tensor layout
change that turns them into our parameter (TF kernels are HWIO / (in, out), ours OIHW /
(out, in))."""

from dataclasses import dataclass

import torch

from simclrv2.tf_import.official_layers import BATCH_NORM, CONV, DENSE, OfficialLayer


@dataclass(frozen=True)
class VariableName:
    ours: str  # our state_dict key
    tf2: str  # object path, e.g. resnet_model/.../conv2d/kernel
    tf1: str  # variable name, e.g. base_model/conv2d_3/kernel

    def to_ours(self, tensor: torch.Tensor) -> torch.Tensor:
        """The TF tensor in our layout and float32."""
        tensor = tensor.float()
        if self.tf2.endswith("/kernel") and tensor.dim() == 4:
            return tensor.permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
        if self.tf2.endswith("/kernel") and tensor.dim() == 2:
            return tensor.t().contiguous()  # (in, out) -> (out, in)
        return tensor

    def tf_shape(self, ours_shape: torch.Size) -> tuple[int, ...]:
        """The shape the TF variable must have to become our parameter of `ours_shape`."""
        shape = tuple(ours_shape)
        if self.tf2.endswith("/kernel") and len(shape) == 4:
            return (shape[2], shape[3], shape[1], shape[0])
        if self.tf2.endswith("/kernel") and len(shape) == 2:
            return (shape[1], shape[0])
        return shape


_VARIABLES = {
    CONV: [("weight", "kernel")],
    DENSE: [("weight", "kernel"), ("bias", "bias")],
    BATCH_NORM: [
        ("weight", "gamma"),
        ("bias", "beta"),
        ("running_mean", "moving_mean"),
        ("running_var", "moving_variance"),
    ],
}
_UNCENTERED = {"bias"}  # dense without bias / BN without beta


def variable_names(layers: list[OfficialLayer]) -> list[VariableName]:
    """Every variable of `layers`; TF1 encoder layers are numbered in creation order."""
    counts = {CONV: 0, BATCH_NORM: 0}
    tf1_layer_names = {CONV: "conv2d", BATCH_NORM: "batch_normalization", DENSE: "dense"}
    names = []
    for layer in layers:
        if layer.tf1_scope:  # head layers: a named scope holding one dense / one BN
            tf1_prefix = f"{layer.tf1_scope}/{tf1_layer_names[layer.kind]}"
        else:
            count = counts[layer.kind]
            counts[layer.kind] += 1
            suffix = f"_{count}" if count else ""
            tf1_prefix = f"base_model/{tf1_layer_names[layer.kind]}{suffix}"
        for ours, tf in _VARIABLES[layer.kind]:
            if ours in _UNCENTERED and not layer.center:
                continue
            names.append(
                VariableName(f"{layer.ours}.{ours}", f"{layer.tf2_path}/{tf}", f"{tf1_prefix}/{tf}")
            )
    return names
