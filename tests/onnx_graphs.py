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
