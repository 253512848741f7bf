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
        from spa_keras import files

        model = str(model)
        kind = files.model_kind(model)
        if kind == files.ONNX:
            from spa_keras.bridges import onnx_io

            return _count_onnx(onnx_io.load(model))
        if kind in (files.KERAS, files.H5):
            from spa_keras.bridges import keras_io

            return _count_keras(keras_io.load(model))
        from spa_keras.errors import InputError

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
    return math.prod(y) * (a[0] if node.attr("transA", 0) else a[-1]) if a and y else 0


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
    from spa_keras.frontends.onnx import from_onnx

    graph = from_onnx(model)
    return Counts(graph_params(graph), 2 * graph_macs(graph))


# ---- Keras ------------------------------------------------------------------------------------------------------

def _out_elems(layer):
    shape = layer.output.shape
    return int(np.prod([d for d in shape[1:]]))


def _keras_conv(layer):
    kernel = layer.kernel.shape  # (*k, in/groups, out)
    return _out_elems(layer) * int(np.prod(kernel[:-1]))


def _keras_conv_transpose(layer):
    kernel = layer.kernel.shape  # (*k, out, in)
    return int(np.prod(layer.input.shape[1:])) * int(np.prod(kernel[:-1]))


def _keras_depthwise(layer):
    kernel = layer.kernel.shape  # (*k, in, multiplier)
    return _out_elems(layer) * int(np.prod(kernel[:-2]))


def _keras_separable(layer):
    dw = layer.depthwise_kernel.shape  # (*k, in, multiplier)
    pw = layer.pointwise_kernel.shape  # (*1, in*mult, out)
    spatial = _out_elems(layer) // pw[-1]
    return spatial * pw[-2] * int(np.prod(dw[:-2])) + _out_elems(layer) * pw[-2]


def _keras_dense(layer):
    return _out_elems(layer) * layer.kernel.shape[0]


KERAS_MACS = {"Conv1D": _keras_conv, "Conv2D": _keras_conv, "Conv3D": _keras_conv,
              "Conv1DTranspose": _keras_conv_transpose, "Conv2DTranspose": _keras_conv_transpose,
              "Conv3DTranspose": _keras_conv_transpose, "DepthwiseConv1D": _keras_depthwise,
              "DepthwiseConv2D": _keras_depthwise, "SeparableConv1D": _keras_separable,
              "SeparableConv2D": _keras_separable, "Dense": _keras_dense}


def _keras_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _keras_layers(layer)
        else:
            yield layer


def _count_keras(model):
    macs = sum(KERAS_MACS[type(l).__name__](l) for l in _keras_layers(model) if type(l).__name__ in KERAS_MACS)
    return Counts(int(model.count_params()), 2 * macs)
