"""Helpers more than one op family uses: constants in a tensor's layout, fused biases, weighted layers, explicit
padding, chains of small layers and the layout several inputs share.

    constant_in_layout   an ONNX constant broadcast against a tensor, as an array in the tensor's Keras layout
    along_channels       a constant as a per-channel vector, when it varies along one axis only
    fused_bias           a following `Add` of a per-channel constant, taken as the layer's bias (Conv, Gemm, MatMul)
    weighted             call a layer, load its weights, register its output
    explicit_pads        ONNX pads (auto_pad resolved) as ((top, bottom), (left, right)) (Conv, pooling)
    zero_pad             a ZeroPadding2D unless the pads are zero
    chain                small layers in sequence, named after the node (Clip, HardSigmoid, Pad)
    common_layout        the layout most inputs of a merge already have (Add/Sub/Mul, Concat)

Example:

>>> along_channels(np.full((1, 4, 1, 1), 2.0), 4, 4, 1)
array([2., 2., 2., 2.], dtype=float32)
>>> along_channels(np.ones((1, 4, 3, 1)), 4, 4, 1) is None
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import onnx
from keras import layers

from spa_keras.ops.geometry import same_pads
from spa_keras.bridges.onnx_to_keras.builder import Builder
from spa_keras.bridges.onnx_to_keras.common import Layout, refuse

Pads = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))


def constant_in_layout(builder: Builder, node: onnx.NodeProto, value: np.ndarray, name: str) -> np.ndarray:
    """A constant broadcast against tensor `name`, as an array in the tensor's Keras layout (batch axis kept).

    Args:
        builder: the conversion state.
        node: the node being converted (for errors).
        value: the constant, in ONNX's axis order and broadcasting.
        name: the ONNX name of the computed tensor it meets.
    """
    rank = len(builder.layouts[name])
    value = np.asarray(value, np.float32)
    if value.ndim > rank:
        raise refuse(node, f"constant of shape {value.shape} has more axes than its tensor")
    value = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if value.shape[0] != 1:
        raise refuse(node, "constant varies along the batch axis")
    return np.transpose(value, builder.layouts[name])


def along_channels(value: np.ndarray | None, units: int, rank: int, axis: int) -> np.ndarray | None:
    """`value` as a vector of `units` when, broadcast to `rank` axes, it varies along `axis` only (else None).

    Args:
        value: the constant (None passes through).
        units: the number of channels.
        rank: the rank of the tensor it broadcasts against.
        axis: the channel axis, in ONNX order.
    """
    if value is None or value.size not in (1, units) or value.ndim > rank:
        return None
    if value.size == 1:
        return np.full(units, value.reshape(()), np.float32)
    shape = (1,) * (rank - value.ndim) + value.shape
    return value.reshape(units).astype(np.float32) if shape[axis] == units else None


def fused_bias(builder: Builder, node: onnx.NodeProto, units: int, rank: int,
               channel_axis: int) -> tuple[np.ndarray | None, str]:
    """(bias, output name) when the node's only consumer adds a constant along its output channels: that Add
    becomes this layer's bias (exporters such as Paddle2ONNX write Conv without bias and Add after it).

    Args:
        builder: the conversion state.
        node: the Conv / Gemm / MatMul being converted.
        units: its output channels.
        rank: its output's rank.
        channel_axis: its output's channel axis, in ONNX order.
    """
    add = builder.sole_consumer(node.output[0], "Add")
    if add is None or len(add.input) != 2:
        return None, node.output[0]
    other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    bias = along_channels(builder.consts.get(other), units, rank, channel_axis)
    return (None, node.output[0]) if bias is None else (bias, add.output[0])


def weighted(builder: Builder, layer: layers.Layer, x: keras.KerasTensor, weights: Sequence[np.ndarray],
             output: str, layout: Layout) -> None:
    """Call `layer` on `x` (building it), load `weights`, register the output.

    Args:
        builder: the conversion state.
        layer: the Keras layer, not yet built.
        x: its input.
        weights: its weights, in `layer.set_weights` order.
        output: the ONNX name of its output.
        layout: the output's layout.
    """
    y = layer(x)
    layer.set_weights([np.asarray(w, np.float32) for w in weights])
    builder.set(output, y, layout)


def explicit_pads(node: onnx.NodeProto, a: dict[str, Any], sizes: Sequence[int], kernel: Sequence[int],
                  strides: Sequence[int], dilations: Sequence[int]) -> Pads:
    """ONNX pads as ((top, bottom), (left, right)), auto_pad resolved for the static input size.

    Args:
        node: the Conv or pooling node (for errors).
        a: its attributes.
        sizes: the input's (H, W).
        kernel: the kernel's (H, W).
        strides: the strides along H and W.
        dilations: the dilations along H and W.
    """
    auto = a.get("auto_pad", "NOTSET")
    if auto == "VALID":
        return ((0, 0), (0, 0))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [same_pads(n, k, s, d)[0] for n, k, s, d in zip(sizes, kernel, strides, dilations)]
        return tuple(p if auto == "SAME_UPPER" else p[::-1] for p in pads)
    p = list(a.get("pads") or [0] * 4)
    if len(p) != 4:
        raise refuse(node, f"pads {p} are not 2-D")
    return ((p[0], p[2]), (p[1], p[3]))


def zero_pad(builder: Builder, node: onnx.NodeProto, x: keras.KerasTensor, pads: Pads) -> keras.KerasTensor:
    """`x` (NHWC) padded with zeros by a ZeroPadding2D named after the node, or `x` itself when `pads` are zero.

    Args:
        builder: the conversion state.
        node: the node being converted.
        x: its NHWC input.
        pads: ((top, bottom), (left, right)).
    """
    if pads == ((0, 0), (0, 0)):
        return x
    return layers.ZeroPadding2D(pads, name=builder.unique(f"{node.name}_pad"))(x)


def chain(b: Builder, node: onnx.NodeProto, x: keras.KerasTensor,
          steps: Sequence[tuple[str, Callable[..., layers.Layer]]]) -> keras.KerasTensor:
    """Apply small layers in sequence, named after the node (the last takes the node's own name).

    Args:
        b: the conversion state.
        node: the node being converted.
        x: the input.
        steps: (name suffix, layer factory called with `name=`) pairs.
    """
    for i, (suffix, layer) in enumerate(steps):
        name = node.name if i == len(steps) - 1 else f"{node.name}_{suffix}"
        x = layer(name=b.unique(name))(x)
    return x


def common_layout(b: Builder, node: onnx.NodeProto, names: Sequence[str]) -> Layout:
    """The layout most inputs already have (the first input's on a tie); inputs must share one rank.

    Args:
        b: the conversion state.
        node: the merging node (for errors).
        names: the ONNX names of its computed inputs.
    """
    layouts = [b.layouts[n] for n in names]
    if len({len(layout) for layout in layouts}) != 1:
        raise refuse(node, "inputs of different ranks (implicit broadcasting) are not supported")
    return max(layouts, key=layouts.count)
