"""The one registry of what the engine knows about each ONNX op type: its `OpSpec`, declared once, in its family's
module, by the `register` decorator on its mask-propagation rule.

An op's spec says:
- `rule(ctx, node)`: how channels couple through it. It reads the channel labels of the node's inputs from `ctx`
  (a `spa_keras.analysis.propagation.Propagation`), binds parameters to labels, unions labels that must go together
  and sets the labels of the outputs. Ops without a spec are barriers.
- `creates_channels`: the rule runs even without labelled inputs (it makes channels from constants).
- `macs(node, shape_of)`: multiply-accumulates at batch 1 (FLOPs = 2 x MACs; ops without one are not counted).
- `weight_matrix(graph, node)`: its constant weight seen as the matrix [d_out, d_in] OBSPA refits (`WeightMatrix`),
  or None.
- `layer(node, graph, batch)`: the op built alone (`LayerShape`), which per-layer latency tables time, or None.
- `rewrite(surgery, node, proto)`: what ONNX surgery fixes after slicing the parameters (depthwise `group`, split
  sizes, slice bounds, shape operands), through the `OnnxRewriter` interface.
How each format describes or rebuilds the op (a Keras layer's description and resizer) lives with that format.

Example:

>>> @register("MyRelu")
... def passthrough(ctx, node):
...     ctx.set(node.outputs[0], ctx.get(node.inputs[0]))
>>> rule_for("MyRelu") is passthrough, spec_for("MyRelu").macs
(True, None)
>>> del SPECS["MyRelu"]
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

import numpy as np

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Node, Shape, SPAGraph
    from spa_keras.analysis.propagation import Propagation
    from spa_keras.ops.geometry import LayerShape

Rule = Callable[["Propagation", "Node"], None]
ShapeOf = Callable[[str], Optional["Shape"]]


@dataclasses.dataclass(frozen=True)
class WeightMatrix:
    """A constant weight seen as the matrix [d_out, d_in] of a linear op: the parameter `weight`, the axis of it that
    carries the input channels, `kind` "conv" (im2col columns in (channel, kh, kw) order) or "dense", and `layout`:
    how the value becomes the matrix ("conv": [M, C·kh·kw], "rows": as it is, "cols": transposed)."""

    weight: str
    input_axis: int
    kind: str
    layout: str


class OnnxRewriter(Protocol):
    """What ONNX surgery offers an op's `rewrite` (spa_keras.formats.onnx.surgery.OnnxSurgery)."""

    ctx: Propagation  # the propagation state

    def old_shape(self, tensor: str) -> Shape | None: ...

    def new_shape(self, tensor: str) -> Shape | None: ...

    def kept_positions(self, tensor: str, axis: int) -> np.ndarray | None: ...

    def set_attr(self, proto: Any, name: str, value: Any) -> None: ...

    def set_input_constant(self, node: Node, slot: int, value: np.ndarray) -> None: ...

    def add_input_constant(self, node: Node, value: np.ndarray) -> None: ...

    def rewrite_shape_input(self, node: Node, slot: int) -> None: ...


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """What the engine knows about one op type (see the module docstring)."""

    rule: Rule
    creates_channels: bool = False
    macs: Optional[Callable[[Node, ShapeOf], int]] = None
    weight_matrix: Optional[Callable[[SPAGraph, Node], Optional[WeightMatrix]]] = None
    layer: Optional[Callable[[Node, SPAGraph, int], Optional[LayerShape]]] = None
    rewrite: Optional[Callable[[OnnxRewriter, Node, Any], None]] = None


SPECS: dict[str, OpSpec] = {}


def register(*op_types: str, creates_channels: bool = False,
             macs: Optional[Callable[[Node, ShapeOf], int]] = None,
             weight_matrix: Optional[Callable[[SPAGraph, Node], Optional[WeightMatrix]]] = None,
             layer: Optional[Callable[[Node, SPAGraph, int], Optional[LayerShape]]] = None,
             rewrite: Optional[Callable[[OnnxRewriter, Node, Any], None]] = None) -> Callable[[Rule], Rule]:
    """Declare the spec of `op_types` with the decorated function as their rule."""

    def wrap(rule: Rule) -> Rule:
        for op in op_types:
            SPECS[op] = OpSpec(rule, creates_channels, macs, weight_matrix, layer, rewrite)
        return rule

    return wrap


def spec_for(op_type: str) -> OpSpec | None:
    """The spec of `op_type` (`spa_keras.ops` imports every family module, which fills the registry)."""
    return SPECS.get(op_type)


def rule_for(op_type: str) -> Rule | None:
    spec = spec_for(op_type)
    return None if spec is None else spec.rule


def creates_channels(op_type: str) -> bool:
    spec = spec_for(op_type)
    return spec is not None and spec.creates_channels
