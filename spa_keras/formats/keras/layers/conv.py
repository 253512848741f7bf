"""Convolutions: Conv1D/2D/3D (grouped), Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D.

Kernels are seen in ONNX layout; the engine's Conv/ConvTranspose rules decide which channels couple (a depthwise
conv ties output channel c·m + j to input channel c, a grouped conv ties position j of every group). Conv nodes carry
their geometry (strides, dilations, explicit pads as TensorFlow's "same" places them) so a layer can be rebuilt
alone (per-layer latency tables). Surgery writes the new `filters` (and the `groups` of a depthwise conv written as a
grouped one); `spa.count` counts every output position times one kernel slice.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from spa_keras.formats.keras.builder import bias, channels_first, depthwise_view, is_channels_last, kernel_perm
from spa_keras.formats.keras.registry import counts, describes, elements, resizes
from spa_keras.ops.geometry import DEPTHWISE, conv_kind, same_pads

if TYPE_CHECKING:
    from spa_keras.formats.keras.builder import GraphBuilder
    from spa_keras.formats.keras.registry import Config, Dims, KerasShape, Weights


def geometry(layer: Any, xs: Dims) -> dict[str, Any]:
    """ONNX Conv attributes for a Keras convolution's strides, dilation and padding: "same" pads split as
    TensorFlow splits them (the odd one at the end), "valid" none, "causal" all at the start."""
    spatial = len(xs) - 2
    strides = _tuple(getattr(layer, "strides", 1), spatial)
    dilations = _tuple(getattr(layer, "dilation_rate", 1), spatial)
    kernel = _tuple(layer.kernel_size, spatial)
    pads = [(0, 0)] * spatial
    if layer.padding == "causal":
        pads = [((k - 1) * d, 0) for k, d in zip(kernel, dilations)]
    elif layer.padding == "same" and None not in xs[1:-1]:
        pads = [same_pads(n, k, s, d)[0] for n, k, s, d in zip(xs[1:-1], kernel, strides, dilations)]
    return {"strides": strides, "dilations": dilations, "pads": tuple(b for b, _ in pads) + tuple(e for _, e in pads)}


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * n


@describes("Conv1D", "Conv2D", "Conv3D")
def conv(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    if not is_channels_last(layer):
        return False
    inputs = [b.param(layer, layer.kernel, kernel_perm(len(xs)))] + bias(b, layer)
    return channels_first(b, layer, x, y, xs, ys, lambda xf, yf: b.node(layer, "Conv", [xf] + inputs, [yf],
                                                                        group=getattr(layer, "groups", 1),
                                                                        **geometry(layer, xs)))


@describes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def conv_transpose(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    if not is_channels_last(layer):
        return False
    inputs = [b.param(layer, layer.kernel, kernel_perm(len(xs)))] + bias(b, layer)
    return channels_first(b, layer, x, y, xs, ys, lambda xf, yf: b.node(layer, "ConvTranspose", [xf] + inputs,
                                                                        [yf], group=1))


@describes("DepthwiseConv1D", "DepthwiseConv2D")
def depthwise(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    if not is_channels_last(layer):
        return False
    perm, shape = depthwise_view(layer.kernel)
    inputs = [b.param(layer, layer.kernel, perm, shape)] + bias(b, layer)
    return channels_first(b, layer, x, y, xs, ys, lambda xf, yf: b.node(layer, "Conv", [xf] + inputs, [yf],
                                                                        group=xs[-1], **geometry(layer, xs)))


@describes("SeparableConv1D", "SeparableConv2D")
def separable(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    if not is_channels_last(layer):
        return False
    perm, shape = depthwise_view(layer.depthwise_kernel)
    dw = b.param(layer, layer.depthwise_kernel, perm, shape)
    pw = b.param(layer, layer.pointwise_kernel, kernel_perm(len(xs)))
    mid = [xs[0], shape[0]] + list(ys[1:-1])  # between the two convs, channels first

    def body(xf: str, yf: str) -> None:
        m = b.fresh(layer, "depthwise", mid)
        b.node(layer, "Conv", [xf, dw], [m], group=xs[-1], **geometry(layer, xs))
        ones = (1,) * (len(xs) - 2)
        b.node(layer, "Conv", [m, pw] + bias(b, layer), [yf], group=1, strides=ones, dilations=ones,
               pads=(0,) * 2 * len(ones))

    return channels_first(b, layer, x, y, xs, ys, body)


# ---- surgery: the slim layer's config --------------------------------------------------------------------------

@resizes("Conv1D", "Conv2D", "Conv3D")
def conv_widths(config: Config, layer: Any, weights: Weights, out_shape: Dims | None) -> Config:
    kernel = weights[0]
    groups = config.get("groups", 1)
    if conv_kind(groups, layer.kernel.shape[-2]) == DEPTHWISE:  # depthwise written as a grouped conv (ConvNeXt)
        config["groups"] = int(kernel.shape[-1] // (layer.filters // groups))
    config["filters"] = int(kernel.shape[-1])
    return config


@resizes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def conv_transpose_widths(config: Config, layer: Any, weights: Weights, out_shape: Dims | None) -> Config:
    config["filters"] = int(weights[0].shape[-2])  # kernel [*k, filters, in]
    return config


@resizes("SeparableConv1D", "SeparableConv2D")
def separable_widths(config: Config, layer: Any, weights: Weights, out_shape: Dims | None) -> Config:
    config["filters"] = int(weights[1].shape[-1])
    return config


# ---- spa.count -------------------------------------------------------------------------------------------------

@counts("Conv1D", "Conv2D", "Conv3D")
def conv_macs(layer: Any, xs: KerasShape, ys: KerasShape) -> int:
    return elements(ys) * math.prod(layer.kernel.shape[:-1])  # kernel (*k, in/groups, out)


@counts("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def conv_transpose_macs(layer: Any, xs: KerasShape, ys: KerasShape) -> int:
    return elements(xs) * math.prod(layer.kernel.shape[:-1])  # kernel (*k, out, in)


@counts("DepthwiseConv1D", "DepthwiseConv2D")
def depthwise_macs(layer: Any, xs: KerasShape, ys: KerasShape) -> int:
    return elements(ys) * math.prod(layer.kernel.shape[:-2])  # kernel (*k, in, multiplier)


@counts("SeparableConv1D", "SeparableConv2D")
def separable_macs(layer: Any, xs: KerasShape, ys: KerasShape) -> int:
    dw = layer.depthwise_kernel.shape  # (*k, in, multiplier)
    pw = layer.pointwise_kernel.shape  # (*1, in*mult, out)
    spatial = elements(ys) // pw[-1]
    return spatial * pw[-2] * math.prod(dw[:-2]) + elements(ys) * pw[-2]
