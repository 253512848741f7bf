"""Pooling and spatial reductions of 4-D tensors, computed channels-last (NHWC).

    MaxPool                             MaxPooling2D ('same', or after zero / edge padding)
    AveragePool                         AveragePooling2D ('same' when count_include_pad=0, else after zero padding)
    GlobalAveragePool, GlobalMaxPool    GlobalAveragePooling2D / GlobalMaxPooling2D (keepdims)
    ReduceMean, ReduceMax over H, W     the same global poolings, keepdims as the node says

ONNX pads max pooling with -inf: explicit pads become TF's 'same' padding where they are the same, zero padding
where the input comes straight from a Relu (or a Clip at ≥ 0), and otherwise copies of the edge rows and columns.
`ceil_mode` becomes extra end padding (`_pool_geometry`); for average pooling only where it adds no window.

Example:

>>> _pool_geometry(7, 3, 2, (0, 0), ceil_mode=1)   # 7 pixels, kernel 3, stride 2: 3 windows, no end padding
(3, 0)
>>> _pool_geometry(8, 3, 2, (0, 0), ceil_mode=1)   # 8 pixels: a 4th window over one pixel of end padding
(4, 1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import onnx
from keras import layers

from spa_keras.ops.geometry import same_pads
from spa_keras.bridges.onnx_to_keras.builder import Builder
from spa_keras.bridges.onnx_to_keras.common import NHWC, attributes, refuse
from spa_keras.bridges.onnx_to_keras.helpers import Pads, explicit_pads, zero_pad
from spa_keras.bridges.onnx_to_keras.registry import Converter, converts


def _pool_geometry(size: int, k: int, s: int, pad: tuple[int, int], ceil_mode: int) -> tuple[int, int]:
    """ONNX's pooled size for one axis and the end padding that gives it with 'valid' pooling."""
    span = size + pad[0] + pad[1] - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + pad[0]:
        out -= 1  # the last window would start in the end padding; onnxruntime drops it
    return out, max((out - 1) * s + k - size - pad[0], 0)


def _edge_pad(builder: Builder, node: onnx.NodeProto, x: keras.KerasTensor, pads: Pads) -> keras.KerasTensor:
    """Pad H and W by repeating the edge rows and columns: what max pooling sees as ONNX's -inf padding, since
    every window holding a padded cell holds the edge cell it copies (pads are smaller than the kernel)."""
    for axis, (begin, end) in ((1, pads[0]), (2, pads[1])):
        if begin == end == 0:
            continue
        size = x.shape[axis]
        crop = (lambda lo, hi: ((lo, hi), (0, 0))) if axis == 1 else (lambda lo, hi: ((0, 0), (lo, hi)))
        tag = "hw"[axis - 1]
        parts = []
        if begin:
            first = layers.Cropping2D(crop(0, size - 1), name=builder.unique(f"{node.name}_{tag}first"))(x)
            parts += [first] * begin
        parts.append(x)
        if end:
            last = layers.Cropping2D(crop(size - 1, 0), name=builder.unique(f"{node.name}_{tag}last"))(x)
            parts += [last] * end
        x = layers.Concatenate(axis=axis, name=builder.unique(f"{node.name}_{tag}edge"))(parts)
    return x


def _non_negative(builder: Builder, name: str) -> bool:
    """Whether `name` comes straight from a Relu (or a Clip at ≥ 0): zero padding is then -inf padding for max."""
    node = builder.producers.get(name)
    if node is None:
        return False
    if node.op_type == "Relu":
        return True
    if node.op_type == "Clip":
        low = attributes(node, builder.opset).get("min") if builder.opset < 11 else (
            builder.consts.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None)
        return low is not None and float(np.asarray(low)) >= 0
    return False


def _pool_args(node: onnx.NodeProto, a: dict[str, Any], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if rank != 4:
        raise refuse(node, "only 2-D pooling rebuilds")
    if any(d != 1 for d in a.get("dilations") or ()):
        raise refuse(node, "dilated pooling is not supported")
    if len(node.output) > 1 and node.output[1]:
        raise refuse(node, "the Indices output is not supported")
    kernel = tuple(a["kernel_shape"])
    return kernel, tuple(a.get("strides") or (1, 1))


@converts("MaxPool")
def _max_pool(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    x = b.tensor(node.input[0], NHWC)
    kernel, strides = _pool_args(node, a, len(x.shape))
    pads = explicit_pads(node, a, x.shape[1:3], kernel, strides, (1, 1))
    geometry = [_pool_geometry(n, k, s, p, a.get("ceil_mode", 0))
                for n, k, s, p in zip(x.shape[1:3], kernel, strides, pads)]
    pads = tuple((p[0], end) for p, (_, end) in zip(pads, geometry))
    same = [same_pads(n, k, s) for n, k, s in zip(x.shape[1:3], kernel, strides)]
    padding = "valid"
    if pads != ((0, 0), (0, 0)):
        if all(p == sp and out == so for p, (sp, so), (out, _) in zip(pads, same, geometry)):
            padding = "same"  # TF's 'same' max pooling ignores the padding, as ONNX's -inf padding does
        elif _non_negative(b, node.input[0]):
            x = zero_pad(b, node, x, pads)
        else:
            x = _edge_pad(b, node, x, pads)
    y = layers.MaxPooling2D(kernel, strides, padding=padding, name=b.unique(node.name))(x)
    b.set(node.output[0], y, NHWC)


@converts("AveragePool")
def _average_pool(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    x = b.tensor(node.input[0], NHWC)
    kernel, strides = _pool_args(node, a, len(x.shape))
    pads = explicit_pads(node, a, x.shape[1:3], kernel, strides, (1, 1))
    floor = [_pool_geometry(n, k, s, p, 0) for n, k, s, p in zip(x.shape[1:3], kernel, strides, pads)]
    if a.get("ceil_mode", 0) and [_pool_geometry(n, k, s, p, 1)[0] for n, k, s, p in
                                  zip(x.shape[1:3], kernel, strides, pads)] != [out for out, _ in floor]:
        raise refuse(node, "ceil_mode adds windows whose divisor no Keras pooling reproduces")
    pads = tuple((p[0], end) for p, (_, end) in zip(pads, floor))
    padding = "valid"
    if pads != ((0, 0), (0, 0)):
        same = [same_pads(n, k, s) for n, k, s in zip(x.shape[1:3], kernel, strides)]
        if a.get("count_include_pad", 0):
            x = zero_pad(b, node, x, pads)
        elif all(p == sp and out == so for p, (sp, so), (out, _) in zip(pads, same, floor)):
            padding = "same"  # TF's 'same' average pooling divides by the cells inside, as count_include_pad=0
        else:
            raise refuse(node, "count_include_pad=0 with pads other than TF's 'same' padding")
    y = layers.AveragePooling2D(kernel, strides, padding=padding, name=b.unique(node.name))(x)
    b.set(node.output[0], y, NHWC)


def _global_pool(keras_layer: Callable[..., layers.Layer]) -> Converter:
    def convert(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        if len(b.layouts[node.input[0]]) != 4:
            raise refuse(node, "only 2-D global pooling rebuilds")
        x = b.tensor(node.input[0], NHWC)
        b.set(node.output[0], keras_layer(keepdims=True, name=b.unique(node.name))(x), NHWC)
    return convert


def _reduce(keras_layer: Callable[..., layers.Layer]) -> Converter:
    """ReduceMean / ReduceMax over H and W of a 4-D tensor: global pooling."""
    def convert(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        rank = len(b.layouts[node.input[0]])
        axes = a.get("axes")
        if axes is None and len(node.input) > 1:
            axes = b.const(node, 1, "axes")
        if rank != 4 or axes is None or sorted(int(i) % rank for i in axes) != [2, 3]:
            raise refuse(node, f"only a reduction over the spatial axes (2, 3) of a 4-D tensor rebuilds (axes "
                               f"{None if axes is None else list(axes)})")
        keep = bool(a.get("keepdims", 1))
        y = keras_layer(keepdims=keep, name=b.unique(node.name))(b.tensor(node.input[0], NHWC))
        b.set(node.output[0], y, NHWC if keep else (0, 1))
    return convert


converts("GlobalAveragePool")(_global_pool(layers.GlobalAveragePooling2D))
converts("GlobalMaxPool")(_global_pool(layers.GlobalMaxPooling2D))
converts("ReduceMean")(_reduce(layers.GlobalAveragePooling2D))
converts("ReduceMax")(_reduce(layers.GlobalMaxPooling2D))
