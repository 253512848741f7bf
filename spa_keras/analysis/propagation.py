"""Mask propagation over an `SPAGraph`: every channel gets a label, rules move and merge labels op by op.

`propagate(graph)` walks the nodes in topological order once. Each rule (spa_keras.ops) sees the labels of its
inputs and sets those of its outputs; parameters are bound to labels (`bind`), coupled positions are merged
(`union`). Ops without a rule are barriers: the labels reaching them are frozen (those channels stay) and their
outputs carry no labels, so the rest of the model still prunes. Graph outputs freeze their labels too: output
shapes never change.

Example:

>>> state = propagate(graph)          # doctest: +SKIP
>>> state.barriers                    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence, cast

import numpy as np

from spa_keras.analysis.graph import Node, Shape, SPAGraph
from spa_keras.analysis.labels import UnionFind
from spa_keras.ops import creates_channels, rule_for

# ops whose outputs are shapes or indices, not activations: channel labels neither pass nor stop there
SHAPE_OPS = {"Shape", "Size", "NonZero", "ConstantOfShape", "Range", "EyeLike", "RandomNormalLike",
             "RandomUniformLike"}


@dataclasses.dataclass
class Binding:
    """Parameter `param`'s axis `axis` carries the channels `labels` (one label per position)."""

    param: str
    axis: int
    labels: np.ndarray
    nodes: list[str]  # the ops that use this parameter axis


@dataclasses.dataclass
class Barrier:
    node: str
    op_type: str
    reason: str
    labels: list[np.ndarray]  # the label arrays it froze


class Propagation:
    """The state rules work on: labels per tensor axis, parameter bindings, frozen labels and barriers."""

    def __init__(self, graph: SPAGraph) -> None:
        self.graph = graph
        self.uf = UnionFind()
        self.labels: dict[str, dict[int, np.ndarray]] = {}
        # tensor -> (axes, label grid): one channel axis spread over several axes
        self.grids: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
        self.bindings: dict[tuple[str, int], Binding] = {}
        self.barriers: list[Barrier] = []
        self.held_params: list[tuple[Barrier, str]] = []  # weights a barrier reads keep every channel bound on them
        self.node: Node | None = None

    @property
    def opset(self) -> int:
        """The ONNX opset whose semantics the graph's nodes follow (Softmax's changed at 13)."""
        return self.graph.opset

    # ---- what rules call ------------------------------------------------------------------------------------
    def get(self, tensor: str, grids: bool = False) -> dict[int, np.ndarray]:
        """`{axis: labels}` of an activation (empty when it carries no prunable channels).

        A channel axis split over several axes (attention heads, a channel shuffle) travels as a grid through
        Reshape and Transpose (`grids=True` there); any other op sees it collapsed to whole rows (heads)."""
        if not grids and tensor in self.grids:
            self.collapse(tensor)
        return self.labels.get(tensor, {})

    def collapse(self, tensor: str, keep_axis: int = 0) -> np.ndarray:
        """Merge a grid's labels so that only its `keep_axis`-th axis still tells channels apart."""
        axes, grid = self.grids.pop(tensor)
        moved = np.moveaxis(grid, keep_axis, 0).reshape(grid.shape[keep_axis], -1)
        for k in range(1, moved.shape[1]):
            self.union(moved[:, 0], moved[:, k])
        labels = dict(self.labels.get(tensor, {}))
        labels[axes[keep_axis]] = moved[:, 0]
        self.labels[tensor] = labels
        return moved[:, 0]

    def set_grid(self, tensor: str, axes: Sequence[int], grid: np.ndarray) -> None:
        order = np.argsort(axes)
        self.grids[tensor] = (tuple(int(axes[i]) for i in order), np.transpose(grid, order))

    def set(self, tensor: str, labels: Mapping[int, np.ndarray | None]) -> None:
        known = {a: l for a, l in labels.items() if l is not None}
        if known:
            self.labels[tensor] = known

    def new(self, n: int) -> np.ndarray:
        return self.uf.new(int(n))

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        self.uf.union(a, b)

    def shape(self, tensor: str) -> Shape:
        """The static shape of `tensor`. Typed as known: `run` calls a rule only when the shapes of its node's inputs
        and used outputs are known, and those are the shapes rules read (the graph's `shape` says None otherwise)."""
        return cast(Shape, self.graph.shape(tensor))

    def rank(self, tensor: str) -> int:
        """The rank of `tensor`; known where rules ask, as `shape` (None otherwise)."""
        shape = self.graph.shape(tensor)
        return cast(int, None if shape is None else len(shape))

    def is_param(self, tensor: str) -> bool:
        return self.graph.is_param(tensor)

    def value(self, tensor: str) -> np.ndarray | None:
        return self.graph.value(tensor)

    def bind(self, param: str, axis: int, labels: np.ndarray) -> None:
        """Parameter `param` (a constant tensor) has `labels` along `axis`."""
        if not param or not self.is_param(param):
            return
        assert self.node is not None, "bind is for rules, which run inside run()"
        shape = self.shape(param)
        axis = axis % len(shape)
        if shape[axis] != len(labels):
            raise ValueError(f"{self.node.name}: binding {len(labels)} labels to axis {axis} of {param} {shape}")
        known = self.bindings.get((param, axis))
        if known is not None:  # a shared weight couples the channels of every op that uses it
            self.union(known.labels, labels)
            known.nodes.append(self.node.name)
        else:
            self.bindings[(param, axis)] = Binding(param, axis, np.asarray(labels), [self.node.name])

    def freeze(self, reason: str, labels: list[np.ndarray] | None = None) -> None:
        """Stop this node: `labels` (default: every label on its inputs) stay; say why in the report."""
        node = self.node
        assert node is not None, "freeze is for rules, which run inside run()"
        barrier = Barrier(node.name, node.op_type, reason, [] if labels is None else list(labels))
        if labels is None:
            barrier.labels = [l for t in node.inputs if t for l in self.get(t).values()]
            self.held_params += [(barrier, t) for t in node.inputs if t and self.is_param(t)]
        self.barriers.append(barrier)

    # ---- the walk ------------------------------------------------------------------------------------------
    def _settle_grids(self) -> None:
        """Grids left on intermediate tensors: after the unions, one axis of each still tells channels apart."""
        for tensor, (axes, grid) in list(self.grids.items()):
            roots = self.uf.find(grid)
            varying = [k for k in range(grid.ndim) if grid.shape[k] > 1 and np.any(np.diff(roots, axis=k) != 0)]
            self.collapse(tensor, varying[0] if varying else 0)

    def run(self) -> Propagation:
        for node in self.graph.nodes:
            self.node = node
            if node.op_type in SHAPE_OPS:
                continue
            rule = rule_for(node.op_type) if node.domain in ("", "ai.onnx", "spa") else None
            labelled = any(self.labels.get(t) or t in self.grids for t in node.inputs if t)
            if rule is None:
                if labelled or _has_params(self, node):
                    self.freeze(node.attr("reason") or f"no rule for op {node.op_type}" +
                                (f" (domain {node.domain})" if node.domain else ""))
                continue
            if not labelled and not creates_channels(node.op_type):
                continue
            used_outputs = [t for t in node.outputs if t and (self.graph.consumers(t) or t in self.graph.outputs)]
            if any(self.graph.shape(t) is None for t in [t for t in node.inputs if t] + used_outputs):
                self.freeze("tensor shapes unknown (shape inference could not resolve them)")
                continue
            rule(self, node)
        self.node = None
        for barrier, param in self.held_params:  # bindings made before or after the barrier was met
            barrier.labels += [b.labels for (p, _), b in self.bindings.items() if p == param]
        self._settle_grids()
        for out in self.graph.outputs:
            labels = list(self.get(out).values())
            if labels:  # named after the op that makes it (a Keras layer), not the tensor (keras_tensor_28)
                producer = self.graph.producer(out)
                name = out if producer is None else producer.display_name
                self.barriers.append(Barrier(name, "output", "graph output: its shape must not change", labels))
        return self


def _has_params(ctx: Propagation, node: Node) -> bool:
    return any(ctx.is_param(t) and math.prod(ctx.shape(t)) > 1 for t in node.inputs if t)


def propagate(graph: SPAGraph) -> Propagation:
    """Run mask propagation on `graph`; return the `Propagation` state."""
    return Propagation(graph).run()
