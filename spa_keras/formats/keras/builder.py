"""`GraphBuilder`: collects the nodes, tensor shapes and parameters of one Keras model's `SPAGraph`.

Layer descriptions (`layers/*.py`) call it to add ONNX-style nodes. Parameters are `KerasParam`s: views of a layer's
variables whose values are read only when a rule or a criterion asks, so building the graph of a large model reads
no weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from spa_keras.analysis.graph import Node, Param, Shape
from spa_keras.formats.keras.schema import with_defaults
from spa_keras.formats.keras.view import KerasView

# what `GraphBuilder.checkpoint` returns: nodes, fresh-name count, sizes of the tables
Mark = tuple[int, int, list[int]]


class KerasParam(Param):
    """A `Param` whose value (in ONNX layout) is read from the Keras variable on first use."""

    handle: KerasView

    def __init__(self, name: str, view: KerasView, counted: bool = True) -> None:
        self.name, self.handle, self.counted = name, view, counted
        self._value: np.ndarray | None = None

    @property
    def value(self) -> np.ndarray:  # type: ignore[override]  # Param's field, here read on first use
        if self._value is None:
            self._value = self.handle.view(self.handle.read())
        return self._value

    @property
    def shape(self) -> Shape:
        return self.handle.view_shape

    def forget(self) -> None:
        """Drop the value read: the variable changed (training goes on), the next use reads it again."""
        self._value = None

    def __repr__(self) -> str:
        return f"KerasParam({self.name!r}, {self.shape})"


@dataclasses.dataclass
class Call:
    """One call of a layer: graph tensor names in the call's own structure (`args`, `kwargs`) and flat."""

    inputs: list[str]
    outputs: list[str]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.params: dict[str, Param] = {}  # KerasParams
        self.shapes: dict[str, Shape | None] = {}
        self.names: set[str] = set()
        self.count = 0
        self._param_of: dict[Hashable, str] = {}  # id(variable) or (id(layer), key) -> param name
        self.layer_outputs: dict[int, str] = {}  # id(layer) -> graph name of its first call's first output
        # id(layer) -> what a description wants a model hook to know (an intermediate tensor)
        self.notes: dict[int, str] = {}

    def _tables(self) -> tuple[dict[Any, Any], ...]:
        return self.params, self.shapes, self._param_of, self.layer_outputs, self.notes

    def checkpoint(self) -> Mark:
        """How much the builder holds now (its tables only grow); `rollback` returns to it."""
        return len(self.nodes), self.count, [len(t) for t in self._tables()]

    def rollback(self, mark: Mark) -> None:
        nodes, self.count, sizes = mark
        self.names -= {n.name for n in self.nodes[nodes:]}
        del self.nodes[nodes:]
        for table, size in zip(self._tables(), sizes):
            for key in list(table)[size:]:  # dicts keep insertion order: the newest keys are last
                del table[key]

    def tensor(self, name: str, shape: Sequence[Any] | None) -> str:
        """A tensor of `shape` (a Keras shape: None for the batch and free dimensions, unknown then)."""
        self.shapes[name] = None if shape is None or any(d is None for d in shape[1:]) else (1,) + tuple(shape[1:])
        return name

    def shape(self, name: str) -> Shape | None:
        return self.params[name].shape if name in self.params else self.shapes.get(name)

    def fresh(self, layer: Any, tag: str, shape: Sequence[int | None] | None) -> str:
        self.count += 1
        return self.tensor(f"{layer.name}/{tag}_{self.count}", shape)

    def _add_param(self, key: Hashable, name: str, view: KerasView, counted: bool = True) -> str:
        if key not in self._param_of:
            while name in self.params:  # two nested models may both hold a layer of the same name
                name += "'"
            self.params[name] = KerasParam(name, view, counted)
            self._param_of[key] = name
        return self._param_of[key]

    def param(self, layer: Any, variable: Any, perm: tuple[int, ...] | None = None,
              shape: tuple[int, ...] | None = None) -> str:
        """The graph name of `variable` seen as `variable.transpose(perm).reshape(shape)`."""
        return self._add_param(id(variable), variable.path, KerasView(layer, variable, perm, shape))

    def constant(self, layer: Any, key: str, source_shape: Sequence[int], attribute: str | None = None) -> str:
        """A per-channel constant from the layer's config (Rescaling's scale); not a parameter Keras counts."""
        view = KerasView(layer, None, config_key=key, source_shape=tuple(source_shape), attribute=attribute)
        return self._add_param((id(layer), key), f"{layer.name}/{key}", view, counted=False)

    def node(self, layer: Any, op: str, inputs: Sequence[str], outputs: Sequence[str], domain: str = "",
             **attrs: Any) -> None:
        name = layer.name if layer.name not in self.names else f"{layer.name}/{op}_{len(self.nodes)}"
        self.names.add(name)
        attrs = with_defaults(op, attrs) if not domain else attrs
        self.nodes.append(Node(name, op, list(inputs), list(outputs), attrs, domain, layer=layer.name))


def channels_first(b: GraphBuilder, layer: Any, x: str, y: str, xs: Sequence[int], ys: Sequence[int],
                   body: Callable[[str, str], Any]) -> bool:
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


def is_channels_last(layer: Any) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def bias(b: GraphBuilder, layer: Any, shape: tuple[int, ...] | None = None) -> list[str]:
    return [b.param(layer, layer.bias, shape=shape)] if getattr(layer, "use_bias", False) else []


def kernel_perm(rank: int) -> tuple[int, ...]:
    """Keras conv kernel [*k, C/g, M] (or transposed [*k, M, C]) → ONNX [M, C/g, *k] (or [C, M, *k])."""
    return (rank - 1, rank - 2) + tuple(range(rank - 2))


def depthwise_view(kernel: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Depthwise kernel [*k, C, m] → ONNX [C·m, 1, *k]: (perm, shape)."""
    r = len(kernel.shape)
    *k, c, m = kernel.shape
    return (r - 2, r - 1) + tuple(range(r - 2)), (c * m, 1) + tuple(k)


