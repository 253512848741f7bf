"""Parameter and FLOP counts for ONNX and Keras models.

Convention (the same for every format):
- FLOPs = 2 × MACs of the linear ops: Conv, ConvTranspose, Gemm, MatMul (ONNX) and Conv*, SeparableConv*,
  DepthwiseConv*, Conv*Transpose, Dense, EinsumDense (Keras), at batch size 1. Element-wise ops, normalisation,
  pooling and activations are not counted: they are a few percent of a CNN's FLOPs and are folded or fused by
  runtimes anyway.
- Parameters = elements of floating-point weights: ONNX initializers and Constant-node tensors (integer shape
  constants excluded); for Keras, `count_params()` (trainable and non-trainable, e.g. BatchNorm statistics).

Example:

>>> stats = count("model.onnx")              # doctest: +SKIP
>>> stats.params, stats.flops                # doctest: +SKIP
"""

import dataclasses
import math
import os

import numpy as np


@dataclasses.dataclass(frozen=True)
class Counts:
    params: int
    flops: int

    @property
    def macs(self):
        return self.flops // 2

    def __str__(self):
        return f"{self.params:,} parameters, {self.flops / 1e6:,.2f} MFLOPs"


def count(model):
    """`Counts(params, flops)` for an ONNX model (path or ModelProto) or a Keras model (path or keras.Model)."""
    if hasattr(model, "graph"):
        return _count_onnx(model)
    if isinstance(model, (str, os.PathLike)):
        from spa_keras.common import files

        model = str(model)
        kind = files.model_kind(model)
        if kind == files.ONNX:
            from spa_keras.bridges import onnx_io

            return _count_onnx(onnx_io.load(model))
        if kind in (files.KERAS, files.H5):
            from spa_keras.bridges import keras_io

            return _count_keras(keras_io.load(model))
        from spa_keras.common.errors import InputError

        raise InputError(f"{model}: spa.count reads .onnx, .keras and .h5 models")
    return _count_keras(model)


# ---- ONNX (any SPAGraph) ------------------------------------------------------------------------------------

def _conv(node, shape_of):
    w, y = shape_of(node.inputs[1]), shape_of(node.outputs[0])
    return math.prod(y) * math.prod(w[1:]) if w and y else 0


def _conv_transpose(node, shape_of):
    x, w = shape_of(node.inputs[0]), shape_of(node.inputs[1])
    return math.prod(x) * math.prod(w[1:]) if x and w else 0


def _matmul(node, shape_of):
    a, y = shape_of(node.inputs[0]), shape_of(node.outputs[0])
    return math.prod(y) * a[-1] if a and y else 0


def _gemm(node, shape_of):
    a, y = shape_of(node.inputs[0]), shape_of(node.outputs[0])
    return math.prod(y) * (a[0] if node.attr("transA") else a[-1]) if a and y else 0


GRAPH_MACS = {"Conv": _conv, "ConvTranspose": _conv_transpose, "MatMul": _matmul, "Gemm": _gemm}


def graph_macs(graph, shape_of=None):
    """MACs of the linear ops of an `SPAGraph` at batch 1 (`shape_of` overrides shapes, for pruned variants)."""
    shape_of = shape_of or graph.shape
    return sum(GRAPH_MACS[n.op_type](n, shape_of) for n in graph.nodes if n.op_type in GRAPH_MACS)


def graph_params(graph, shape_of=None):
    """Elements of the parameters an `SPAGraph` counts (front-ends decide: ONNX floating-point weights, every Keras
    variable as in `count_params()`)."""
    shape_of = shape_of or graph.shape
    return sum(int(np.prod(shape_of(name))) for name, p in graph.params.items() if p.counted)


def _count_onnx(model):
    from spa_keras.formats.onnx.frontend import from_onnx

    graph = from_onnx(model)
    return Counts(graph_params(graph), 2 * graph_macs(graph))


# ---- Keras ------------------------------------------------------------------------------------------------------

def _elems(shape):
    return int(np.prod([d or 1 for d in shape[1:]]))  # free dimensions count as 1, as in the engine


def _keras_conv(layer, xs, ys):
    return _elems(ys) * int(np.prod(layer.kernel.shape[:-1]))  # kernel (*k, in/groups, out)


def _keras_conv_transpose(layer, xs, ys):
    return _elems(xs) * int(np.prod(layer.kernel.shape[:-1]))  # kernel (*k, out, in)


def _keras_depthwise(layer, xs, ys):
    return _elems(ys) * int(np.prod(layer.kernel.shape[:-2]))  # kernel (*k, in, multiplier)


def _keras_separable(layer, xs, ys):
    dw = layer.depthwise_kernel.shape  # (*k, in, multiplier)
    pw = layer.pointwise_kernel.shape  # (*1, in*mult, out)
    spatial = _elems(ys) // pw[-1]
    return spatial * pw[-2] * int(np.prod(dw[:-2])) + _elems(ys) * pw[-2]


def _keras_dense(layer, xs, ys):
    return _elems(ys) * layer.kernel.shape[0]


def _einsum_macs(equation, x_shape, kernel_shape):
    """MACs of a two-operand einsum: the product of the sizes of all its distinct indices (batch and free
    dimensions as 1)."""
    x, rest = equation.replace(" ", "").split(",")
    k = rest.split("->")[0]
    if "..." in x:
        x = x.replace("...", "#" * (len(x_shape) - len(x) + 3))
    sizes = {c: d or 1 for c, d in zip(x[1:], x_shape[1:]) if c != "#"}
    sizes.update(zip(k, kernel_shape))
    return int(np.prod(list(sizes.values()))) * int(np.prod([d or 1 for c, d in zip(x, x_shape) if c == "#"]))


def _keras_einsum(layer, xs, ys):
    return _einsum_macs(layer.equation, xs, layer.kernel.shape)


def _keras_attention(layer, xs, ys):
    """Q, K, V and output projections plus Q·Kᵀ and A·V per head."""
    query, value = xs[0], xs[1] if len(xs) > 1 else xs[0]
    key = xs[2] if len(xs) > 2 else value
    heads, key_dim = layer._query_dense.kernel.shape[1:]
    value_dim = layer._value_dense.kernel.shape[2]
    t, s = int(np.prod([d or 1 for d in query[1:-1]])), int(np.prod([d or 1 for d in key[1:-1]]))
    projections = sum(_einsum_macs(d.equation, shape, d.kernel.shape) for d, shape in (
        (layer._query_dense, query), (layer._key_dense, key), (layer._value_dense, value),
        (layer._output_dense, (1,) + tuple(query[1:-1]) + (heads, value_dim))))
    return projections + heads * t * s * (key_dim + value_dim)


KERAS_MACS = {"Conv1D": _keras_conv, "Conv2D": _keras_conv, "Conv3D": _keras_conv,
              "Conv1DTranspose": _keras_conv_transpose, "Conv2DTranspose": _keras_conv_transpose,
              "Conv3DTranspose": _keras_conv_transpose, "DepthwiseConv1D": _keras_depthwise,
              "DepthwiseConv2D": _keras_depthwise, "SeparableConv1D": _keras_separable,
              "SeparableConv2D": _keras_separable, "Dense": _keras_dense, "EinsumDense": _keras_einsum,
              "MultiHeadAttention": _keras_attention}
SINGLE = {"MultiHeadAttention": False}


def _keras_calls(model):
    """(layer, input shapes, output shapes) for every call of every layer, models used as layers walked into."""
    functional = getattr(model, "_functional", None) or model
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for node in functional._nodes_by_depth[depth]:
            layer = node.operation
            if node.is_input:
                continue
            if hasattr(layer, "_nodes_by_depth") or getattr(layer, "_functional", None) is not None:
                yield from _keras_calls(layer)
            else:
                yield layer, [tuple(t.shape) for t in node.input_tensors], [tuple(t.shape) for t in node.outputs]


def _count_keras(model):
    macs = 0
    for layer, xs, ys in _keras_calls(model):
        kind = type(layer).__name__
        if kind in KERAS_MACS:
            macs += KERAS_MACS[kind](layer, xs if not SINGLE.get(kind, True) else xs[0],
                                     ys if not SINGLE.get(kind, True) else ys[0])
    return Counts(int(model.count_params()), 2 * macs)
