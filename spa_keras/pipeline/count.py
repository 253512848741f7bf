"""`spa.count(model)`: parameters and FLOPs of an ONNX or Keras model.

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

from __future__ import annotations

import os
from typing import Any

from spa_keras import formats
from spa_keras.analysis.cost import Counts
from spa_keras.common import files
from spa_keras.common.errors import InputError


def count(model: Any) -> Counts:
    """`Counts(params, flops)` for an ONNX model (path or ModelProto) or a Keras model (path or keras.Model)."""
    if isinstance(model, (str, os.PathLike)) and files.model_kind(str(model)) not in (files.ONNX, files.KERAS,
                                                                                      files.H5):
        raise InputError(f"{model}: spa.count reads .onnx, .keras and .h5 models")
    return formats.load(model).counts()
