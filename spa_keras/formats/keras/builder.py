"""`GraphBuilder`: collects the nodes, tensor shapes and parameters of one Keras model's `SPAGraph`.

Layer descriptions (`layers/*.py`) call it to add ONNX-style nodes. Parameters are `KerasParam`s: views of a layer's
variables whose values are read only when a rule or a criterion asks, so building the graph of a large model reads
no weights.
"""

import dataclasses


from spa_keras.formats.keras.schema import with_defaults
from spa_keras.formats.keras.view import KerasView
from spa_keras.analysis.graph import Node, Param


class KerasParam(Param):
    """A `Param` whose value (in ONNX layout) is read from the Keras variable on first use."""

    def __init__(self, name, view, counted=True):
        self.name, self.handle, self.counted = name, view, counted
        self._value = None

    @property
    def value(self):
        if self._value is None:
            self._value = self.handle.view(self.handle.read())
        return self._value

    @property
    def shape(self):
        return self.handle.view_shape

    def forget(self):
        """Drop the value read: the variable changed (training goes on), the next use reads it again."""
        self._value = None

    def __repr__(self):
        return f"KerasParam({self.name!r}, {self.shape})"


@dataclasses.dataclass
class Call:
    """One call of a layer: graph tensor names in the call's own structure (`args`, `kwargs`) and flat."""

    inputs: list
    outputs: list
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)


class GraphBuilder:
    def __init__(self):
        self.nodes, self.params, self.shapes = [], {}, {}
        self.names = set()
        self.count = 0
        self._param_of = {}  # id(variable) or (id(layer), key) -> param name
        self.layer_outputs = {}  # id(layer) -> graph name of its first call's first output
        self.notes = {}  # id(layer) -> what a description wants a model hook to know (an intermediate tensor)

    def _tables(self):
        return self.params, self.shapes, self._param_of, self.layer_outputs, self.notes

    def checkpoint(self):
        """How much the builder holds now (its tables only grow); `rollback` returns to it."""
        return len(self.nodes), self.count, [len(t) for t in self._tables()]

    def rollback(self, mark):
        nodes, self.count, sizes = mark
        self.names -= {n.name for n in self.nodes[nodes:]}
        del self.nodes[nodes:]
        for table, size in zip(self._tables(), sizes):
            for key in list(table)[size:]:  # dicts keep insertion order: the newest keys are last
                del table[key]

    def tensor(self, name, shape):
        self.shapes[name] = None if shape is None or any(d is None for d in shape[1:]) else (1,) + tuple(shape[1:])
        return name

    def shape(self, name):
        return self.params[name].shape if name in self.params else self.shapes.get(name)

    def fresh(self, layer, tag, shape):
        self.count += 1
        return self.tensor(f"{layer.name}/{tag}_{self.count}", shape)

    def _add_param(self, key, name, view, counted=True):
        if key not in self._param_of:
            while name in self.params:  # two nested models may both hold a layer of the same name
                name += "'"
            self.params[name] = KerasParam(name, view, counted)
            self._param_of[key] = name
        return self._param_of[key]

    def param(self, layer, variable, perm=None, shape=None):
        """The graph name of `variable` seen as `variable.transpose(perm).reshape(shape)`."""
        return self._add_param(id(variable), variable.path, KerasView(layer, variable, perm, shape))

    def constant(self, layer, key, source_shape, attribute=None):
        """A per-channel constant from the layer's config (Rescaling's scale); not a parameter Keras counts."""
        view = KerasView(layer, None, config_key=key, source_shape=tuple(source_shape), attribute=attribute)
        return self._add_param((id(layer), key), f"{layer.name}/{key}", view, counted=False)

    def node(self, layer, op, inputs, outputs, domain="", **attrs):
        name = layer.name if layer.name not in self.names else f"{layer.name}/{op}_{len(self.nodes)}"
        self.names.add(name)
        attrs = with_defaults(op, attrs) if not domain else attrs
        self.nodes.append(Node(name, op, list(inputs), list(outputs), attrs, domain, layer=layer.name))


def channels_first(b, layer, x, y, xs, ys, body):
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


def is_channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def bias(b, layer, shape=None):
    return [b.param(layer, layer.bias, shape=shape)] if getattr(layer, "use_bias", False) else []


def kernel_perm(rank):
    """Keras conv kernel [*k, C/g, M] (or transposed [*k, M, C]) → ONNX [M, C/g, *k] (or [C, M, *k])."""
    return (rank - 1, rank - 2) + tuple(range(rank - 2))


def depthwise_view(kernel):
    """Depthwise kernel [*k, C, m] → ONNX [C·m, 1, *k]: (perm, shape)."""
    r = len(kernel.shape)
    *k, c, m = kernel.shape
    return (r - 2, r - 1) + tuple(range(r - 2)), (c * m, 1) + tuple(k)


