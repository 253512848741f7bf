"""One op with a weight as a model of its own, in ONNX (what per-layer latency tables time on onnxruntime).

Example:

>>> from spa_keras.ops.geometry import LayerShape
>>> model = onnx_layer(LayerShape("Gemm", (1, 8), (4, 8)))
>>> [n.op_type for n in model.graph.node]
['Gemm']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spa_keras.ops.geometry import LayerShape


def onnx_layer(shape: LayerShape) -> Any:
    """A one-node ONNX model of `shape` (random weights, a bias)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = []
    if shape.op != "Identity":
        weights = [numpy_helper.from_array(rng.standard_normal(shape.w).astype("float32"), "w"),
                   numpy_helper.from_array(rng.standard_normal(shape.cout).astype("float32"), "b")]
    if shape.op == "Identity":
        node = helper.make_node("Identity", ["x"], ["y"])
    elif shape.op == "Conv":
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=list(shape.strides), pads=list(shape.pads),
                                dilations=list(shape.dilations), group=shape.group)
    elif shape.op == "Gemm":
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    elif shape.op == "MatMul":
        node, weights = helper.make_node("MatMul", ["x", "w"], ["y"]), weights[:1]
    else:
        raise ValueError(f"no one-layer ONNX model of op {shape.op!r} (Conv, Gemm, MatMul or Identity)")
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape.x)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
