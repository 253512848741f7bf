"""Activations: one layer (or a short chain) per node, in the input's layout.

    Relu, LeakyRelu, Elu            ReLU, LeakyReLU(alpha), ELU(alpha)
    Sigmoid, Tanh, HardSwish        Activation("sigmoid" / "tanh" / "hard_swish")
    HardSigmoid                     Rescaling(alpha, beta) then ReLU(max_value=1)
    Clip                            ReLU(max_value) alone, or between two Rescalings (bounds other than 0 below)
    Softmax                         Softmax over the Keras axis behind ONNX's `axis`
    PRelu                           PReLU, the constant slope shared along the axes where it has size 1

Layers of a chain are named after the node with a suffix, the last one with the node's own name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from keras import layers

from spa_keras.bridges.onnx_to_keras.builder import Builder
from spa_keras.bridges.onnx_to_keras.common import refuse
from spa_keras.bridges.onnx_to_keras.helpers import chain, constant_in_layout
from spa_keras.bridges.onnx_to_keras.registry import Converter, converts


def _activation(make: Callable[[dict[str, Any], str], layers.Layer]) -> Converter:
    def convert(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        layout = b.layouts[node.input[0]]
        b.set(node.output[0], make(a, b.unique(node.name))(b.tensor(node.input[0])), layout)
    return convert


SIMPLE = {  # op type -> the layer, from the attributes and the layer name
    "Relu": lambda a, name: layers.ReLU(name=name),
    "LeakyRelu": lambda a, name: layers.LeakyReLU(negative_slope=a.get("alpha", 0.01), name=name),
    "Elu": lambda a, name: layers.ELU(alpha=a.get("alpha", 1.0), name=name),
    "Sigmoid": lambda a, name: layers.Activation("sigmoid", name=name),
    "Tanh": lambda a, name: layers.Activation("tanh", name=name),
    "HardSwish": lambda a, name: layers.Activation("hard_swish", name=name),
}
for _op_type, _make in SIMPLE.items():
    converts(_op_type)(_activation(_make))
del _op_type, _make


@converts("HardSigmoid")
def _hard_sigmoid(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    steps = [("affine", lambda name: layers.Rescaling(a.get("alpha", 0.2), a.get("beta", 0.5), name=name)),
             ("clip", lambda name: layers.ReLU(max_value=1.0, name=name))]
    b.set(node.output[0], chain(b, node, b.tensor(node.input[0]), steps), b.layouts[node.input[0]])


@converts("Clip")
def _clip(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    if b.opset < 11:
        low, high = a.get("min"), a.get("max")
    else:
        low, high = b.const(node, 1, "min"), b.const(node, 2, "max")
    low = None if low is None or float(np.asarray(low)) <= np.finfo(np.float32).min else float(np.asarray(low))
    high = None if high is None or float(np.asarray(high)) >= np.finfo(np.float32).max else float(np.asarray(high))
    x = b.tensor(node.input[0])
    if low is None and high is None:
        steps = []
    elif low is None:  # min(x, high) = high - relu(high - x)
        steps = [("flip", lambda name: layers.Rescaling(-1.0, high, name=name)), ("relu", layers.ReLU),
                 ("back", lambda name: layers.Rescaling(-1.0, high, name=name))]
    elif low == 0:
        steps = [("relu", lambda name: layers.ReLU(max_value=high, name=name))]
    else:  # low + relu(x - low) capped at high - low
        cap = None if high is None else high - low
        steps = [("shift", lambda name: layers.Rescaling(1.0, -low, name=name)),
                 ("relu", lambda name: layers.ReLU(max_value=cap, name=name)),
                 ("back", lambda name: layers.Rescaling(1.0, low, name=name))]
    b.set(node.output[0], chain(b, node, x, steps) if steps else x, b.layouts[node.input[0]])


@converts("Softmax")
def _softmax(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    layout = b.layouts[node.input[0]]
    rank = len(layout)
    axis = a.get("axis", -1 if b.opset >= 13 else 1) % rank
    if b.opset < 13 and any(d != 1 for d in b.shape(node.input[0])[axis + 1:]):
        raise refuse(node, "Softmax before opset 13 normalises over all axes from `axis` on")
    y = layers.Softmax(axis=layout.index(axis), name=b.unique(node.name))(b.tensor(node.input[0]))
    b.set(node.output[0], y, layout)


@converts("PRelu")
def _prelu(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    layout = b.layouts[node.input[0]]
    x = b.tensor(node.input[0])
    slope = constant_in_layout(b, node, b.const(node, 1, "slope"), node.input[0])[0]
    shared = [i + 1 for i, d in enumerate(slope.shape) if d == 1 and x.shape[i + 1] != 1]
    layer = layers.PReLU(shared_axes=shared or None, name=b.unique(node.name))
    y = layer(x)
    layer.set_weights([np.broadcast_to(slope, layer.alpha.shape).astype(np.float32)])
    b.set(node.output[0], y, layout)
