"""What the engine knows about each ONNX op, one module per op family; importing the package fills the registry.

    registry.py       OpSpec (rule, MACs, weight matrix, timed layer, ONNX rewrite), `register`, `spec_for`
    geometry.py       "same" padding, conv kinds (dense, depthwise, grouped), LayerShape
    conv.py           Conv, ConvTranspose
    linear.py         Gemm, MatMul, embedding Gather
    elementwise.py    unary and broadcasting n-ary ops, Softmax
    normalization.py  BatchNormalization, InstanceNormalization, LayerNormalization, GroupNormalization
    pooling.py        pooling, Pad, Resize, Expand, Tile, reductions
    shape.py          Reshape, Flatten, Squeeze, Unsqueeze, Transpose
    slicing.py        Concat, Split, Slice
    tie.py            Tie (spa domain): widths one config value sets
Adding an op touches its family's module (its rule and spec) and its tests; a format that describes or rebuilds it
(a Keras layer, the ONNX -> Keras bridge) has its own module for that.

Example:

>>> from spa_keras.ops import spec_for
>>> spec = spec_for("Conv")
>>> spec.creates_channels, spec.macs is not None, spec.rewrite is not None
(True, True, True)
"""

from spa_keras.ops import conv, elementwise, linear, normalization, pooling, shape, slicing, tie  # noqa: F401
from spa_keras.ops.registry import OpSpec, creates_channels, rule_for, spec_for  # noqa: F401

__all__ = ["OpSpec", "spec_for", "rule_for", "creates_channels"]
