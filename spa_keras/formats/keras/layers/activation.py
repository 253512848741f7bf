"""Activations (element-wise: channels pass; the softmax family mixes its axis), Softmax, PReLU (per-channel slopes),
dropout and noise (identity)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from spa_keras.formats.keras.registry import describes

if TYPE_CHECKING:
    from spa_keras.formats.keras.builder import GraphBuilder
    from spa_keras.formats.keras.registry import Dims


def unary(op: str) -> Callable[..., bool]:
    def describe(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
        b.node(layer, op, [x], [y])
        return True
    return describe


describes("ReLU")(unary("Relu"))
describes("LeakyReLU")(unary("LeakyRelu"))
describes("ELU")(unary("Elu"))
describes("Identity", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
          "GaussianDropout", "AlphaDropout", "ActivityRegularization", "StochasticDepth")(unary("Identity"))


# Keras activations that act on each element alone: channels pass. `softmax`-like ones mix the channels of their axis;
# `glu` halves it; anything else (a custom callable) is not known to be element-wise.
ELEMENTWISE = {"celu", "elu", "exponential", "gelu", "hard_shrink", "hard_sigmoid", "hard_silu", "hard_swish",
               "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "mish", "relu", "relu6", "selu", "sigmoid", "silu",
               "soft_shrink", "softplus", "softsign", "sparse_plus", "sparse_sigmoid", "squareplus", "swish", "tanh",
               "tanh_shrink", "threshold"}
MIXING = {"softmax", "log_softmax", "sparsemax"}


def activation_node(b: GraphBuilder, layer: Any, fn: Any, x: str, y: str) -> None:
    """Describe `fn` (a Keras activation) applied to x → y: element-wise as Relu, the softmax family as a Softmax
    over the last axis, anything else as a barrier named after the function."""
    name = getattr(fn, "__name__", type(fn).__name__)
    if name in ELEMENTWISE:
        b.node(layer, "Relu", [x], [y])  # every element-wise activation moves channels the same way
    elif name in MIXING:
        b.node(layer, "Softmax", [x], [y], axis=-1)
    else:
        b.node(layer, "Activation", [x], [y], domain="keras",
               reason=f"activation {name!r} is not known to act element-wise")


def is_elementwise(fn: Any) -> bool:
    return fn is None or getattr(fn, "__name__", None) in ELEMENTWISE


@describes("Activation")
def activation(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    activation_node(b, layer, layer.activation, x, y)
    return True


@describes("Softmax")
def softmax(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    axes = np.atleast_1d(layer.axis)
    if len(axes) != 1:
        return False  # a softmax over several axes mixes more than one tensor axis
    b.node(layer, "Softmax", [x], [y], axis=int(axes[0]))
    return True


@describes("PReLU")
def prelu(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    b.node(layer, "PRelu", [x, b.param(layer, layer.alpha)], [y])
    return True
