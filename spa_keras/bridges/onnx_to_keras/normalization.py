"""BatchNormalization: a Keras `BatchNormalization` over the ONNX channel axis (axis 1), in any layout.

The four statistics become the layer's gamma, beta, moving mean and moving variance; `epsilon` and `momentum` are
the node's. Its Keras axis is wherever the input's layout put ONNX's axis 1 (the last one when channels-last).
"""

from __future__ import annotations

from typing import Any

import onnx
from keras import layers

from spa_keras.bridges.onnx_to_keras.builder import Builder
from spa_keras.bridges.onnx_to_keras.helpers import weighted
from spa_keras.bridges.onnx_to_keras.registry import converts


@converts("BatchNormalization")
def _batch_norm(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    scale, bias, mean, var = (b.const(node, i, what) for i, what in
                              ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    layout = b.layouts[node.input[0]]
    layer = layers.BatchNormalization(axis=layout.index(1), epsilon=a.get("epsilon", 1e-5),
                                      momentum=a.get("momentum", 0.9), name=b.unique(node.name))
    weighted(b, layer, b.tensor(node.input[0]), [scale, bias, mean, var], node.output[0], layout)
