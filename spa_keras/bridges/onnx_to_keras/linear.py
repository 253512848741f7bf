"""Gemm and MatMul with a constant weight: a Keras `Dense` over the last ONNX axis.

    Gemm (transA=0, 2-D input)    Dense: B (transposed when transB) times alpha, C times beta as the bias
    MatMul (constant 2-D B)       Dense

Both take a per-channel `Add` right after them as (more) bias. The input is read in ONNX order (a Permute first
when it was computed channels-last); a C that is not per-channel and a computed weight raise `ConversionError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from keras import layers

from spa_keras.bridges.onnx_to_keras.builder import Builder
from spa_keras.bridges.onnx_to_keras.common import identity_layout, refuse
from spa_keras.bridges.onnx_to_keras.helpers import along_channels, fused_bias, weighted
from spa_keras.bridges.onnx_to_keras.registry import converts


def _dense(b: Builder, node: onnx.NodeProto, kernel: np.ndarray, bias: np.ndarray | None) -> None:
    """A Dense over the last ONNX axis (the input in ONNX order), bias fused from a following Add."""
    rank = len(b.layouts[node.input[0]])
    extra, output = fused_bias(b, node, kernel.shape[1], rank, rank - 1)
    if extra is not None:
        bias = extra if bias is None else bias + extra
    x = b.tensor(node.input[0], identity_layout(len(b.layouts[node.input[0]])))
    layer = layers.Dense(kernel.shape[1], use_bias=bias is not None, name=b.unique(node.name))
    weighted(b, layer, x, [kernel] + ([bias] if bias is not None else []), output, identity_layout(len(x.shape)))


@converts("Gemm")
def _gemm(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    if a.get("transA", 0):
        raise refuse(node, "transA=1 is not supported")
    if len(b.layouts[node.input[0]]) != 2:
        raise refuse(node, "Gemm needs a 2-D input")
    weight = b.const(node, 1, "B")
    kernel = (weight.T if a.get("transB", 0) else weight) * a.get("alpha", 1.0)
    c = b.const(node, 2, "C")
    bias = None
    if c is not None:
        bias = along_channels(c, kernel.shape[1], 2, 1)
        if bias is None:
            raise refuse(node, f"C of shape {c.shape} varies along the batch")
        bias = bias * a.get("beta", 1.0)
    _dense(b, node, kernel, bias)


@converts("MatMul")
def _matmul(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    weight = b.const(node, 1, "second input")
    if weight.ndim != 2:
        raise refuse(node, "only a constant 2-D second input rebuilds (as Dense)")
    _dense(b, node, weight, None)
