"""Add, Sub, Mul and Div, and `ConstantAffine`, the package's one custom layer.

    tensor ∘ tensor        Add / Subtract / Multiply (Div refused), inputs in the layout most of them have
    tensor ∘ constant      x * scale + offset: Rescaling when the constant is a scalar or varies along the last
                           Keras axis only (channels, when channels-last), ConstantAffine otherwise
    constant ∘ constant    folded (onnx's reference evaluator)

A per-channel constant added right after a bias-free Conv / Gemm / MatMul never reaches this module: that
converter takes it as its bias. `ConstantAffine` is registered with Keras as `spa_keras>ConstantAffine`, so a
model holding one loads after `import spa_keras.bridges.onnx_to_keras`.

Example:

>>> layer = ConstantAffine((1, 1, 4))
>>> tuple(layer(np.ones((2, 3, 3, 4), "float32")).shape), layer.get_config()["shape"]
((2, 3, 3, 4), [1, 1, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import onnx
from keras import layers

from spa_keras.bridges.onnx_to_keras.builder import Builder
from spa_keras.bridges.onnx_to_keras.common import refuse
from spa_keras.bridges.onnx_to_keras.helpers import common_layout, constant_in_layout, weighted
from spa_keras.bridges.onnx_to_keras.registry import converts


@keras.saving.register_keras_serializable(package="spa_keras")
class ConstantAffine(layers.Layer):
    """`x * scale + offset` with constant (non-trainable) arrays that broadcast against the input, batch axis
    excluded: an ONNX `tensor ⊕ constant` that neither a bias nor `Rescaling` expresses.

    Args:
        shape: the shape of `scale` and `offset` (the input's without its batch axis, or broadcasting to it).
        **kwargs: the base `Layer` arguments (`name`, ...).

    >>> tuple(ConstantAffine((1, 1, 4))(np.ones((2, 3, 3, 4), "float32")).shape)
    (2, 3, 3, 4)
    """

    def __init__(self, shape: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.constant_shape = tuple(shape)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.scale = self.add_weight(name="scale", shape=self.constant_shape, initializer="ones", trainable=False)
        self.offset = self.add_weight(name="offset", shape=self.constant_shape, initializer="zeros",
                                      trainable=False)

    def call(self, x: Any) -> Any:
        return x * self.scale + self.offset

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": list(self.constant_shape)}


MERGE = {"Add": layers.Add, "Sub": layers.Subtract, "Mul": layers.Multiply}


@converts("Add", "Sub", "Mul", "Div")
def _binary(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    names = list(node.input)
    constant = [n in b.consts for n in names]
    if not any(constant):
        return _merge(b, node, names)
    if all(constant):
        return b.fold(node)
    tensor = names[constant.index(False)]
    value = constant_in_layout(b, node, b.consts[names[constant.index(True)]], tensor)
    reverse = constant[0]  # constant ∘ tensor
    op = node.op_type
    if op == "Div" and reverse:
        raise refuse(node, "dividing a constant by a tensor has no Keras layer")
    ones, zeros = np.ones_like(value), np.zeros_like(value)
    scale, offset = {"Add": (ones, value), "Mul": (value, zeros), "Div": (1.0 / value, zeros),
                     "Sub": (-ones, value) if reverse else (ones, -value)}[op]
    _affine(b, node, tensor, np.broadcast_to(scale, np.broadcast_shapes(scale.shape, offset.shape)), offset)


def _affine(b: Builder, node: onnx.NodeProto, tensor: str, scale: np.ndarray, offset: np.ndarray) -> None:
    """`x * scale + offset` (constants in x's Keras layout, batch axis kept): Rescaling when the constants are
    scalars or vary along the last Keras axis only, ConstantAffine otherwise."""
    x = b.tensor(tensor)
    rank = len(x.shape)
    scale, offset = scale.reshape(scale.shape[1:]), offset.reshape(offset.shape[1:])
    name = b.unique(node.name)
    if scale.size == 1 and offset.size == 1:
        layer = layers.Rescaling(float(scale.reshape(())), float(offset.reshape(())), name=name)
    elif all(d == 1 for d in scale.shape[:-1] + offset.shape[:-1]):  # full rank: robust to channels_first config
        shape = (1,) * (rank - 2) + (max(scale.shape[-1], offset.shape[-1]),)
        layer = layers.Rescaling(np.broadcast_to(scale, shape).tolist(), np.broadcast_to(offset, shape).tolist(),
                                 name=name)
    else:
        shape = np.broadcast_shapes(scale.shape, offset.shape)
        layer = ConstantAffine(shape, name=name)
        weighted(b, layer, x, [np.broadcast_to(scale, shape), np.broadcast_to(offset, shape)], node.output[0],
                 b.layouts[tensor])
        return
    b.set(node.output[0], layer(x), b.layouts[tensor])


def _merge(b: Builder, node: onnx.NodeProto, names: list[str]) -> None:
    if node.op_type not in MERGE:
        raise refuse(node, f"{node.op_type} of two computed tensors has no Keras layer")
    layout = common_layout(b, node, names)
    y = MERGE[node.op_type](name=b.unique(node.name))([b.tensor(n, layout) for n in names])
    b.set(node.output[0], y, layout)
