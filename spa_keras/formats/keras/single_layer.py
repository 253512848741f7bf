"""One op with a weight as a model of its own, in Keras, channels last (what per-layer latency tables time on
TFLite and TensorFlow, which run Keras models that way).

Example:

>>> from spa_keras.ops.geometry import LayerShape
>>> keras_input_shape(LayerShape("Conv", (1, 8, 16, 16), (4, 8, 3, 3)))
(1, 16, 16, 8)
"""

from __future__ import annotations

from typing import Any

from spa_keras.ops.geometry import LayerShape


def keras_input_shape(shape: LayerShape) -> tuple:
    """The input shape of the one-layer Keras model of `shape` (channels last)."""
    return (shape.x[0], *shape.x[2:], shape.x[1]) if shape.op == "Conv" else shape.x


def keras_layer(shape: LayerShape) -> Any:
    """A one-layer Keras model of `shape`, channels last (TFLite and TensorFlow run Keras models that way)."""
    import keras

    x = keras.Input(batch_shape=keras_input_shape(shape))
    if shape.op == "Identity":
        return keras.Model(x, keras.layers.Identity()(x))
    if shape.op != "Conv":
        return keras.Model(x, keras.layers.Dense(shape.cout)(x))
    top, left, bottom, right = shape.pads
    y = keras.layers.ZeroPadding2D(((top, bottom), (left, right)))(x) if any(shape.pads) else x
    kernel = tuple(shape.w[2:])
    if shape.depthwise:
        layer = keras.layers.DepthwiseConv2D(kernel, shape.strides, depth_multiplier=shape.cout // shape.cin,
                                             dilation_rate=shape.dilations)
    else:
        layer = keras.layers.Conv2D(shape.cout, kernel, shape.strides, dilation_rate=shape.dilations)
    return keras.Model(x, layer(y))
