"""Activations (element-wise: channels pass), Softmax, PReLU (per-channel slopes), dropout and noise (identity)."""

import numpy as np

from spa_keras.frontends.keras.registry import describes


def unary(op):
    def describe(b, layer, x, y, xs, ys):
        b.node(layer, op, [x], [y])
        return True
    return describe


describes("ReLU")(unary("Relu"))
describes("LeakyReLU")(unary("LeakyRelu"))
describes("ELU")(unary("Elu"))
describes("Identity", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
          "GaussianDropout", "AlphaDropout", "ActivityRegularization", "StochasticDepth")(unary("Identity"))


@describes("Activation")
def activation(b, layer, x, y, xs, ys):
    name = getattr(getattr(layer, "activation", None), "__name__", "relu")
    if name in ("softmax", "log_softmax"):
        b.node(layer, "Softmax", [x], [y], axis=-1)
    else:
        b.node(layer, "Relu", [x], [y])  # every element-wise activation moves channels the same way
    return True


@describes("Softmax")
def softmax(b, layer, x, y, xs, ys):
    b.node(layer, "Softmax", [x], [y], axis=int(np.atleast_1d(layer.axis)[0]))
    return True


@describes("PReLU")
def prelu(b, layer, x, y, xs, ys):
    b.node(layer, "PRelu", [x, b.param(layer, layer.alpha)], [y])
    return True
