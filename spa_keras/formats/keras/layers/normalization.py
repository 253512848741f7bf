"""Normalisation: BatchNormalization, LayerNormalization, GroupNormalization (whole groups), Normalization and
Rescaling with per-channel statistics (constants that travel with their channels)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from spa_keras.formats.keras.builder import channels_first
from spa_keras.formats.keras.registry import describes, resizes

if TYPE_CHECKING:
    from spa_keras.formats.keras.builder import GraphBuilder
    from spa_keras.formats.keras.registry import Config, Dims, Weights


def _last_axis(layer: Any, rank: int) -> bool:
    return [a % rank for a in np.atleast_1d(layer.axis)] == [rank - 1]


@describes("BatchNormalization")
def batch_norm(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    if not _last_axis(layer, len(xs)):
        return False
    gamma = b.param(layer, layer.gamma) if layer.scale else None
    beta = b.param(layer, layer.beta) if layer.center else None
    mean, var = b.param(layer, layer.moving_mean), b.param(layer, layer.moving_variance)
    if gamma is None or beta is None:  # ONNX BatchNormalization needs both: per-channel Sub/Div/Mul/Add instead
        first = len(b.nodes)
        per_channel_steps(b, layer, x, y, xs, [(mean, "Sub"), (var, "Div"), (gamma, "Mul"), (beta, "Add")])
        for node in b.nodes[first:]:  # the Mul by γ is still a BatchNorm scale (the bn_scale criterion reads it)
            if gamma is not None and node.inputs[1:] == [gamma]:
                node.attrs["batchnorm_scale"] = 1
        return True
    if len(xs) == 2:
        b.node(layer, "BatchNormalization", [x, gamma, beta, mean, var], [y], epsilon=layer.epsilon)
        return True
    return channels_first(b, layer, x, y, xs, ys, lambda xf, yf: b.node(
        layer, "BatchNormalization", [xf, gamma, beta, mean, var], [yf], epsilon=layer.epsilon))


def per_channel_steps(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims,
                      steps: Sequence[tuple[str | None, str]]) -> bool:
    """x → y through element-wise ops with per-channel constants (steps whose constant is None are left out)."""
    present = [(p, op) for p, op in steps if p is not None]
    if not present:
        b.node(layer, "Identity", [x], [y])
        return True
    t = x
    for i, (p, op) in enumerate(present):
        out = y if i == len(present) - 1 else b.fresh(layer, op, xs)
        b.node(layer, op, [t, p], [out])
        t = out
    return True


@describes("LayerNormalization")
def layer_norm(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    if not _last_axis(layer, len(xs)):
        return False
    inputs = [x, b.param(layer, layer.gamma) if layer.scale else "", b.param(layer, layer.beta) if layer.center
              else ""]
    b.node(layer, "LayerNormalization", inputs, [y], axis=-1, epsilon=layer.epsilon)
    return True


@describes("GroupNormalization")
def group_norm(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    if not _last_axis(layer, len(xs)) or len(xs) < 3:
        return False
    inputs = [b.param(layer, layer.gamma) if layer.scale else "", b.param(layer, layer.beta) if layer.center else ""]
    return channels_first(b, layer, x, y, xs, ys, lambda xf, yf: b.node(
        layer, "GroupNormalization", [xf] + inputs, [yf], num_groups=layer.groups, epsilon=layer.epsilon))


@describes("Normalization")
def normalization(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    if not _last_axis(layer, len(xs)):
        return False
    mean: str | None
    var: str | None
    if layer.input_mean is None:  # adapted: the statistics are variables
        mean, var = b.param(layer, layer.adapt_mean), b.param(layer, layer.adapt_variance)
    else:  # given in the config: per-channel constants there (a scalar touches no channel)
        values = [np.asarray(v, np.float32) for v in (layer.input_mean, layer.input_variance)]
        if any(v.ndim > 1 or (v.ndim == 1 and v.shape[0] != xs[-1]) for v in values):
            return False
        mean, var = (b.constant(layer, key, v.shape, attribute=f"input_{key}") if v.ndim else None
                     for key, v in zip(("mean", "variance"), values))
    steps = [(var, "Mul"), (mean, "Add")] if layer.invert else [(mean, "Sub"), (var, "Div")]
    return per_channel_steps(b, layer, x, y, xs, steps)


@describes("Rescaling")
def rescaling(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    steps = []
    for key, op in (("scale", "Mul"), ("offset", "Add")):
        value = np.asarray(getattr(layer, key), np.float32)
        if value.ndim == 0:
            continue
        if value.ndim != 1 or value.shape[0] != xs[-1]:
            return False
        steps.append((b.constant(layer, key, value.shape), op))
    return per_channel_steps(b, layer, x, y, xs, steps)


@resizes("GroupNormalization")
def group_norm_widths(config: Config, layer: Any, weights: Weights, out_shape: Dims | None) -> Config:
    assert out_shape is not None  # a layer's own output shape (only a model class is given None)
    old = layer.gamma.shape[0] if layer.scale else layer.beta.shape[0] if layer.center else layer.input.shape[-1]
    config["groups"] = int(layer.groups * out_shape[-1] // old)
    return config
