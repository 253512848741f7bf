"""Small ONNX graphs built with onnx.helper for engine tests, and the masking oracle.

Removal equals masking: for networks whose removed channels end in linear consumers, the slim model's output equals
the original model's output with the consumers' input slices of the removed channels set to zero.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    """Appends nodes with random weights; every method returns the output tensor name."""

    def __init__(self, seed=0, size=8, channels=3):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.n = 0
        self.size = size
        self.input_shape = [None, channels, size, size]

    def _name(self, prefix):
        self.n += 1
        return f"{prefix}{self.n}"

    def param(self, shape, scale=None, positive=False):
        name = self._name("w")
        scale = scale if scale is not None else 1.0 / np.sqrt(max(1, int(np.prod(shape[1:])) or 1))
        value = self.rng.uniform(0.5, 1.5, shape) if positive else self.rng.normal(0, scale, shape)
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def const(self, value, dtype=np.int64):
        name = self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type, inputs, n_out=1, **attrs):
        outs = [self._name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self._name(op_type + "_node"), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, cin, cout, k=3, group=1, stride=1, bias=True):
        w = self.param([cout, cin // group, k, k])
        inputs = [x, w] + ([self.param([cout], 0.1)] if bias else [])
        return self.op("Conv", inputs, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride, stride], group=group)

    def bn(self, x, c):
        return self.op("BatchNormalization", [x, self.param([c], positive=True), self.param([c], 0.1),
                                              self.param([c], 0.1), self.param([c], positive=True)])

    def cbr(self, x, cin, cout, **kw):
        return self.op("Relu", [self.bn(self.conv(x, cin, cout, **kw), cout)])

    def gemm(self, x, cin, cout):
        return self.op("Gemm", [x, self.param([cout, cin]), self.param([cout], 0.1)], transB=1)

    def model(self, output, out_dims):
        inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, self.input_shape)
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, [None] + list(out_dims))
        graph = helper.make_graph(self.nodes, "g", [inp], [out], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


# ---- the masking oracle ---------------------------------------------------------------------------------------

def consumer_axes(node, graph):
    """{param: input-channel axis} for the linear consumers among `node`'s inputs."""
    if node.op_type == "Conv" and node.attr("group", 1) == 1:
        return {node.inputs[1]: 1}
    if node.op_type == "Conv":  # grouped (not depthwise): axis 1 is the position inside each group
        w = graph.shape(node.inputs[1])
        return {node.inputs[1]: 1} if w[1] > 1 else {}
    if node.op_type == "ConvTranspose" and node.attr("group", 1) == 1:
        return {node.inputs[1]: 0}
    if node.op_type == "Gemm":
        return {node.inputs[1]: 1 if node.attr("transB", 0) else 0}
    if node.op_type == "MatMul" and graph.is_param(node.inputs[1]):
        return {node.inputs[1]: len(graph.shape(node.inputs[1])) - 2}
    return {}


def masked_model(analysis, removed):
    """The original model with the removed channels' consumer input slices zeroed."""
    ga = analysis.graph_analysis
    graph = ga.graph
    model = onnx.ModelProto()
    model.CopyFrom(graph.source)
    inits = {i.name: i for i in model.graph.initializer}
    for node in graph.nodes:
        for param, axis in consumer_axes(node, graph).items():
            binding = ga.state.bindings.get((param, axis))
            if binding is None or param not in inits:
                continue
            ids = ga.dense(binding.labels)
            gone = (ids >= 0) & removed[np.maximum(ids, 0)]
            if gone.any():
                value = numpy_helper.to_array(inits[param]).copy()
                index = [slice(None)] * value.ndim
                index[axis] = gone
                value[tuple(index)] = 0
                inits[param].CopyFrom(numpy_helper.from_array(value, param))
    return model
