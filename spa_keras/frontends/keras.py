"""Keras front-end: a Keras 3 Functional or Sequential model → `SPAGraph`, without ONNX.

Each layer is described with ONNX operators in its real layout: tensors keep Keras's channels-last shapes, and ops
that ONNX defines channels-first (Conv, BatchNormalization, pooling) are wrapped in Transposes, so the one set of
rules decides coupling for both front-ends. Parameters are views of the layer's own variables (a Conv2D kernel
[kh, kw, C, M] is seen as ONNX's [M, C, kh, kw]); the view remembers how to map an axis back for Keras surgery.
A layer without a description becomes an op in the `keras` domain: a barrier the report names.

Example:

>>> graph = from_keras(model)       # doctest: +SKIP
"""

import dataclasses

import numpy as np

from spa_keras.errors import InputError
from spa_keras.graph import Node, Param, SPAGraph


@dataclasses.dataclass
class KerasView:
    """How an ONNX-view parameter relates to a Keras variable: `view = variable.transpose(perm)`, or for a depthwise
    kernel [kh, kw, C, m] the view [C·m, 1, kh, kw]."""

    layer: object
    variable: object
    perm: tuple = None
    depthwise: bool = False

    def view(self, value):
        if self.depthwise:
            kh, kw, c, m = value.shape
            return value.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
        return value if self.perm is None else value.transpose(self.perm)

    def variable_masks(self, view_masks):
        """{variable axis: keep mask} from {view axis: keep mask}."""
        out = {}
        for axis, keep in view_masks.items():
            if self.depthwise:
                if axis == 0:
                    c, m = self.variable.shape[2], self.variable.shape[3]
                    out[2] = keep.reshape(c, m).all(axis=1)
            else:
                out[axis if self.perm is None else self.perm[axis]] = keep
        return out


class _Builder:
    def __init__(self):
        self.nodes, self.params, self.shapes = [], {}, {}
        self.names = set()
        self.count = 0

    def tensor(self, name, shape):
        self.shapes[name] = None if shape is None or any(d is None for d in shape[1:]) else (1,) + tuple(shape[1:])
        return name

    def fresh(self, layer, tag, shape):
        self.count += 1
        return self.tensor(f"{layer.name}/{tag}_{self.count}", shape)

    def param(self, layer, variable, perm=None, depthwise=False):
        view = KerasView(layer, variable, perm, depthwise)
        name = variable.path
        if name not in self.params:
            self.params[name] = Param(name, view.view(np.asarray(variable.numpy())), ("keras", view))
            self.shapes[name] = tuple(self.params[name].value.shape)
        return name

    def node(self, layer, op, inputs, outputs, domain="", **attrs):
        name = layer.name if layer.name not in self.names else f"{layer.name}/{op}_{len(self.nodes)}"
        self.names.add(name)
        self.nodes.append(Node(name, op, list(inputs), list(outputs), attrs, domain))


def _rank(shape):
    return len(shape)


def _channels_first(b, layer, x, y, xs, ys, body):
    """Describe a channels-first ONNX op on channels-last tensors: Transpose in, `body(x_nchw, y_nchw)`, Transpose
    back out."""
    r = len(xs)
    to_first = [0, r - 1] + list(range(1, r - 1))
    to_last = [0] + list(range(2, r)) + [1]
    xf = b.fresh(layer, "nchw_in", [xs[i] for i in to_first])
    yf = b.fresh(layer, "nchw_out", [ys[i] for i in to_first])
    b.node(layer, "Transpose", [x], [xf], perm=to_first)
    body(xf, yf)
    b.node(layer, "Transpose", [yf], [y], perm=to_last)
    return True


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _bias(b, layer):
    return [b.param(layer, layer.bias)] if layer.use_bias else []


def describe_conv(b, layer, x, y, xs, ys):
    if not _channels_last(layer):
        return False
    r = len(xs)
    kernel_perm = (r - 1, r - 2) + tuple(range(r - 2))  # [*k, C/g, M] -> [M, C/g, *k]
    inputs = [b.param(layer, layer.kernel, kernel_perm)] + _bias(b, layer)
    return _channels_first(b, layer, x, y, xs, ys, lambda xf, yf: b.node(layer, "Conv", [xf] + inputs, [yf],
                                                                         group=getattr(layer, "groups", 1)))


def describe_depthwise(b, layer, x, y, xs, ys):
    if not _channels_last(layer) or len(xs) != 4:
        return False
    inputs = [b.param(layer, layer.kernel, depthwise=True)] + _bias(b, layer)
    return _channels_first(b, layer, x, y, xs, ys, lambda xf, yf: b.node(layer, "Conv", [xf] + inputs, [yf],
                                                                         group=xs[-1]))


def describe_separable(b, layer, x, y, xs, ys):
    if not _channels_last(layer) or len(xs) != 4:
        return False
    dw = b.param(layer, layer.depthwise_kernel, depthwise=True)
    pw = b.param(layer, layer.pointwise_kernel, (3, 2, 0, 1))
    mid_channels = layer.depthwise_kernel.shape[2] * layer.depthwise_kernel.shape[3]
    mid = [xs[0], mid_channels] + list(ys[1:3])  # between the two convs, channels first

    def body(xf, yf):
        m = b.fresh(layer, "depthwise", mid)
        b.node(layer, "Conv", [xf, dw], [m], group=xs[-1])
        b.node(layer, "Conv", [m, pw] + _bias(b, layer), [yf], group=1)

    return _channels_first(b, layer, x, y, xs, ys, body)


def describe_dense(b, layer, x, y, xs, ys):
    kernel = b.param(layer, layer.kernel)
    if not layer.use_bias:
        b.node(layer, "MatMul", [x, kernel], [y])
        return True
    mm = b.fresh(layer, "matmul", ys)
    b.node(layer, "MatMul", [x, kernel], [mm])
    b.node(layer, "Add", [mm, b.param(layer, layer.bias)], [y])
    return True


def describe_batch_norm(b, layer, x, y, xs, ys):
    if layer.axis not in (-1, len(xs) - 1):
        return False
    r = len(xs)
    gamma = b.param(layer, layer.gamma) if layer.scale else None
    beta = b.param(layer, layer.beta) if layer.center else None
    mean, var = b.param(layer, layer.moving_mean), b.param(layer, layer.moving_variance)
    if gamma is None or beta is None:  # ONNX BatchNormalization needs both: describe as per-channel Sub/Div/Mul/Add
        steps = [(p, op) for p, op in ((mean, "Sub"), (var, "Div"), (gamma, "Mul"), (beta, "Add")) if p is not None]
        t = x
        for i, (p, op) in enumerate(steps):
            out = y if i == len(steps) - 1 else b.fresh(layer, op, xs)
            b.node(layer, op, [t, p], [out])
            t = out
        return True
    if r == 2:
        b.node(layer, "BatchNormalization", [x, gamma, beta, mean, var], [y], epsilon=layer.epsilon)
        return True
    return _channels_first(b, layer, x, y, xs, ys, lambda xf, yf: b.node(
        layer, "BatchNormalization", [xf, gamma, beta, mean, var], [yf], epsilon=layer.epsilon))


def describe_layer_norm(b, layer, x, y, xs, ys):
    axes = [a % len(xs) for a in np.atleast_1d(layer.axis)]
    if axes != [len(xs) - 1]:
        return False
    inputs = [x, b.param(layer, layer.gamma) if layer.scale else None, b.param(layer, layer.beta) if layer.center
              else None]
    b.node(layer, "LayerNormalization", [t or "" for t in inputs], [y], axis=-1, epsilon=layer.epsilon)
    return True


def describe_pool(b, layer, x, y, xs, ys):
    if not _channels_last(layer):
        return False
    op = "MaxPool" if "Max" in type(layer).__name__ else "AveragePool"
    return _channels_first(b, layer, x, y, xs, ys, lambda xf, yf: b.node(layer, op, [xf], [yf]))


def describe_global_pool(b, layer, x, y, xs, ys):
    if not _channels_last(layer):
        return False
    op = "ReduceMax" if "Max" in type(layer).__name__ else "ReduceMean"
    b.node(layer, op, [x], [y], axes=list(range(1, len(xs) - 1)), keepdims=int(bool(getattr(layer, "keepdims", 0))))
    return True


def unary(op):
    def describe(b, layer, x, y, xs, ys):
        b.node(layer, op, [x], [y])
        return True
    return describe


def describe_activation(b, layer, x, y, xs, ys):
    name = getattr(getattr(layer, "activation", None), "__name__", "relu")
    if name in ("softmax", "log_softmax"):
        b.node(layer, "Softmax", [x], [y], axis=-1)
    else:
        b.node(layer, "Relu", [x], [y])  # every element-wise activation moves channels the same way
    return True


def describe_softmax(b, layer, x, y, xs, ys):
    b.node(layer, "Softmax", [x], [y], axis=int(np.atleast_1d(layer.axis)[0]))
    return True


def describe_same_size(b, layer, x, y, xs, ys):
    """Padding, cropping, upsampling: spatial sizes change, channels pass."""
    b.node(layer, "Pad", [x], [y])
    return True


def describe_embedding(b, layer, x, y, xs, ys):
    b.node(layer, "Gather", [b.param(layer, layer.embeddings), x], [y], axis=0)
    return True


def describe_prelu(b, layer, x, y, xs, ys):
    b.node(layer, "PRelu", [x, b.param(layer, layer.alpha)], [y])
    return True


def describe_rescaling(b, layer, x, y, xs, ys):
    if np.ndim(layer.scale) or np.ndim(layer.offset):  # per-channel constants live in the config: not described
        return False
    b.node(layer, "Identity", [x], [y])
    return True


def describe_flatten(b, layer, x, y, xs, ys):
    b.node(layer, "Flatten", [x], [y], axis=1)
    return True


def describe_reshape(b, layer, x, y, xs, ys):
    b.node(layer, "Reshape", [x], [y])
    return True


def describe_permute(b, layer, x, y, xs, ys):
    b.node(layer, "Transpose", [x], [y], perm=[0] + list(layer.dims))
    return True


DESCRIBE = {
    "Conv1D": describe_conv, "Conv2D": describe_conv, "Conv3D": describe_conv,
    "DepthwiseConv2D": describe_depthwise, "SeparableConv2D": describe_separable, "Dense": describe_dense,
    "BatchNormalization": describe_batch_norm, "LayerNormalization": describe_layer_norm,
    "MaxPooling1D": describe_pool, "MaxPooling2D": describe_pool, "AveragePooling1D": describe_pool,
    "AveragePooling2D": describe_pool, "GlobalAveragePooling1D": describe_global_pool,
    "GlobalAveragePooling2D": describe_global_pool, "GlobalMaxPooling1D": describe_global_pool,
    "GlobalMaxPooling2D": describe_global_pool, "Activation": describe_activation, "ReLU": unary("Relu"),
    "LeakyReLU": unary("LeakyRelu"), "ELU": unary("Elu"), "Softmax": describe_softmax,
    "Dropout": unary("Identity"), "SpatialDropout1D": unary("Identity"), "SpatialDropout2D": unary("Identity"),
    "GaussianNoise": unary("Identity"), "GaussianDropout": unary("Identity"), "AlphaDropout": unary("Identity"),
    "ActivityRegularization": unary("Identity"), "Identity": unary("Identity"),
    "ZeroPadding1D": describe_same_size, "ZeroPadding2D": describe_same_size, "Cropping1D": describe_same_size,
    "Cropping2D": describe_same_size, "UpSampling1D": describe_same_size, "UpSampling2D": describe_same_size,
    "Embedding": describe_embedding, "PReLU": describe_prelu, "Rescaling": describe_rescaling,
    "Flatten": describe_flatten, "Reshape": describe_reshape, "Permute": describe_permute,
}
MERGE = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Average": "Mean", "Maximum": "Max", "Minimum": "Min"}


def from_keras(model):
    """Build an `SPAGraph` from a Keras 3 Functional or Sequential model (layers in topological order)."""
    import keras

    functional = getattr(model, "_functional", None) or model
    if not hasattr(functional, "_nodes_by_depth") or not getattr(model, "inputs", None):
        raise InputError(f"model '{model.name}' is a subclassed keras.Model without a layer graph; spa-keras prunes "
                         "Functional and Sequential models directly, and others through ONNX: "
                         "spa.prune(model, ..., via='onnx')")
    b = _Builder()
    for tensor in model.inputs:
        b.tensor(tensor.name, tensor.shape)
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for knode in functional._nodes_by_depth[depth]:
            layer = knode.operation
            if isinstance(layer, keras.layers.InputLayer):
                continue
            inputs = [t.name for t in knode.input_tensors]
            outputs = [t.name for t in knode.outputs]
            for t in list(knode.input_tensors) + list(knode.outputs):
                if t.name not in b.shapes:
                    b.tensor(t.name, t.shape)
            _describe(b, layer, inputs, outputs, [t.shape for t in knode.input_tensors], [t.shape for t in knode.outputs])
    return SPAGraph(b.nodes, b.shapes, b.params, [t.name for t in model.inputs], [t.name for t in model.outputs],
                    source=model, layout="NHWC")


def _describe(b, layer, inputs, outputs, in_shapes, out_shapes):
    kind = type(layer).__name__
    if kind in MERGE and len(outputs) == 1:
        b.node(layer, MERGE[kind], inputs, outputs)
        return
    if kind == "Concatenate" and len(outputs) == 1:
        b.node(layer, "Concat", inputs, outputs, axis=layer.axis % len(out_shapes[0]))
        return
    describe = DESCRIBE.get(kind)
    if describe is not None and len(inputs) == 1 and len(outputs) == 1 and None not in (b.shapes.get(inputs[0]),
                                                                                        b.shapes.get(outputs[0])):
        if describe(b, layer, inputs[0], outputs[0], b.shapes[inputs[0]], b.shapes[outputs[0]]):
            return
    # no description: a barrier in its own domain, named after the layer class; its weights stay as they are
    weights = [b.param(layer, v) for v in layer.weights]
    b.node(layer, kind, inputs + weights, outputs, domain="keras")
