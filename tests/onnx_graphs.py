"""Small ONNX graphs built with onnx.helper for engine tests (the oracles are in tests/oracles.py)."""

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


def fold_batchnorm(model):
    """A copy of `model` with every BatchNormalization that is the only reader of a Conv's output folded into that
    Conv, as PyTorch eval exports and tf2onnx do: W' = γW/σ, b' = β + γ(b − μ)/σ (σ = √(var + ε))."""
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {o: n for n in graph.node for o in n.output}
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    kept = []
    for node in graph.node:
        conv = producer.get(node.input[0]) if node.op_type == "BatchNormalization" else None
        if conv is None or conv.op_type != "Conv" or readers[node.input[0]] != 1:
            kept.append(node)
            continue
        scale, shift, mean, var = (consts[node.input[i]].astype(np.float64) for i in range(1, 5))
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        k = scale / np.sqrt(var + epsilon)
        w = consts[conv.input[1]].astype(np.float64)
        b = consts[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else 0.0
        names = (node.output[0] + "_folded_w", node.output[0] + "_folded_b")
        graph.initializer.extend([
            numpy_helper.from_array((w * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32), names[0]),
            numpy_helper.from_array(((b - mean) * k + shift).astype(np.float32), names[1])])
        x = conv.input[0]
        del conv.input[:]
        conv.input.extend([x, *names])
        conv.output[0] = node.output[0]
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    initializers = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return folded
