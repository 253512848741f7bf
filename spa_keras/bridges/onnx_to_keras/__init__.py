"""ONNX → Keras 3: rebuild an ONNX graph as a trainable functional model of standard Keras layers.

The result saves as `.keras` and loads back with `keras.models.load_model`, and `fit` trains it: weights become
layer weights (Conv → Conv2D / DepthwiseConv2D, Gemm → Dense, BatchNormalization → BatchNormalization, ...), one
converter per ONNX op in `CONVERTERS`, attribute defaults from the op schema, as onnx's reference evaluator does.

Layout. TensorFlow's CPU kernels refuse channels-first Conv2D and DepthwiseConv2D (Keras 3.15 hands them NCHW), so
the model computes channels-last: every tensor carries a layout, the ONNX axis behind each Keras axis. Convolutions
and pooling read NHWC; element-wise ops, Concat, Softmax and BatchNormalization take any layout (axes are mapped);
Flatten, Reshape, Squeeze and Unsqueeze read ONNX order (a Permute first, unless only size-1 axes are out of
place); Transpose only changes the layout. Inputs and outputs keep ONNX's shapes (NCHW), with one Permute where a
channels-last op first reads an input and one where an output leaves channels-last.

Constants: initializers, Constant nodes and whatever is computed from constants alone (shapes included, with a
free batch) are folded by onnx's reference evaluator. `tensor ⊕ constant` becomes the bias of the bias-free
Conv / MatMul / Gemm right before it, a `Rescaling` when the constant is a scalar or varies along channels only,
and otherwise a `ConstantAffine` layer: the package's one custom layer, registered as `spa_keras>ConstantAffine`
(a model holding one loads after `import spa_keras.bridges.onnx_to_keras`). Ops outside `CONVERTERS` and
attributes no Keras layer reproduces raise `ConversionError` naming the op and node.

Modules, from the bottom up (op modules import the registry, common, the builder and the helpers, never each
other; this package imports every op module, which fills the registry):

    registry.py        CONVERTERS (ONNX op type -> converter) and the `converts` decorator that fills it
    common.py          layout constants (NHWC, BATCH), a node's attributes, the error texts (`refuse`)
    builder.py         Builder: the conversion loop, constant folding, Keras tensors and their layouts
    helpers.py         what several op families share: constants in a layout, fused biases, explicit pads
    conv.py            Conv, ConvTranspose
    linear.py          Gemm, MatMul (Dense)
    normalization.py   BatchNormalization
    pooling.py         MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, ReduceMean, ReduceMax
    activation.py      Relu, LeakyRelu, Elu, Sigmoid, Tanh, HardSwish, HardSigmoid, Clip, Softmax, PRelu
    elementwise.py     Add, Sub, Mul, Div; the ConstantAffine layer
    shape.py           Concat, Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Identity, Dropout, Cast
    padding.py         Pad
    resize.py          Resize, Upsample

Example:

>>> model = onnx_to_keras(onnx.load("resnet18.onnx"))               # doctest: +SKIP
>>> model = onnx_to_keras(ppocr, input_shapes={None: (1, 3, 48, 192)})  # doctest: +SKIP
>>> model.save("resnet18.keras")                                     # doctest: +SKIP

A one-node graph: a 3x3 convolution, computed channels-last between two Permutes.

>>> import numpy as np
>>> from onnx import TensorProto, helper, numpy_helper
>>> weight = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
>>> graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")], "g",
...                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
...                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8, 16, 16])], [weight])
>>> model = onnx_to_keras(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
>>> [(type(layer).__name__, layer.name) for layer in model.layers]
[('InputLayer', 'x'), ('Permute', 'x_nhwc'), ('Conv2D', 'conv'), ('Permute', 'y_nchw')]
>>> model.outputs[0].shape
(None, 8, 16, 16)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import onnx

# importing the op modules fills CONVERTERS (in this order: the order of the table before the split)
from spa_keras.bridges.onnx_to_keras import conv, linear, normalization, pooling  # noqa: F401
from spa_keras.bridges.onnx_to_keras import activation, elementwise, shape, padding, resize  # noqa: F401
from spa_keras.bridges.onnx_to_keras.builder import Builder
from spa_keras.bridges.onnx_to_keras.elementwise import ConstantAffine
from spa_keras.bridges.onnx_to_keras.registry import CONVERTERS  # noqa: F401

__all__ = ["ConstantAffine", "onnx_to_keras"]


def onnx_to_keras(model: onnx.ModelProto, input_shapes: Mapping[str | None, Sequence[int]] | None = None,
                  name: str = "onnx_model") -> keras.Model:
    """A trainable `keras.Model` computing what the ONNX `model` computes, inputs and outputs in ONNX's shapes.

    `input_shapes` (`{input name or None: shape with batch}`) fills free non-batch input dimensions; the batch
    stays free. Raises `ConversionError` for ops (or attributes) no standard Keras layer reproduces.

    Args:
        model: the ONNX model (a `ModelProto`, as `onnx.load` returns).
        input_shapes: `{input name or None: shape with batch}` for inputs with free non-batch dimensions; the
            key None: every input without its own entry.
        name: the Keras model's name.

    Returns:
        The functional `keras.Model`, its layers named after the ONNX nodes.

    >>> keras_model = onnx_to_keras(onnx_model, {None: (1, 3, 224, 224)})   # doctest: +SKIP
    >>> keras_model.predict(np.zeros((2, 3, 224, 224), "float32")).shape    # doctest: +SKIP
    (2, 1000)
    """
    return Builder(model, input_shapes or {}).build(name)
