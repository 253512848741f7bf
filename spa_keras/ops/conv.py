"""Conv and ConvTranspose: output channels are new labels; input channels bind the kernel's input axis.

- Dense (`group == 1`): W [M, C, k...] axis 1 takes the input's labels, axis 0 (and the bias) new labels.
- Depthwise (`C / group == 1`, channel multiplier m = M / C): output channel c·m + j comes from input channel c, so
  the outputs repeat the input labels m times and `group` shrinks with the channels (ONNX surgery rewrites it).
- Grouped (`1 < group < C`): every group must stay the same size, so position j of each group is one channel: the
  input labels are merged across groups, and the outputs get M / group new labels tiled over the groups.

MACs: every output position multiplies one kernel slice (Conv), every input position scatters one (ConvTranspose).
OBSPA refits a dense 2-D Conv as W [M, C·kh·kw] over im2col columns; latency tables time dense and depthwise 2-D
convolutions alone.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from spa_keras.ops.geometry import DENSE, DEPTHWISE, LayerShape, conv_kind, same_pads
from spa_keras.ops.registry import WeightMatrix, register

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Node, SPAGraph
    from spa_keras.analysis.propagation import Propagation
    from spa_keras.ops.registry import OnnxRewriter, ShapeOf


def conv_macs(node: Node, shape_of: ShapeOf) -> int:
    w, y = shape_of(node.inputs[1]), shape_of(node.outputs[0])
    return math.prod(y) * math.prod(w[1:]) if w and y else 0


def conv_transpose_macs(node: Node, shape_of: ShapeOf) -> int:
    x, w = shape_of(node.inputs[0]), shape_of(node.inputs[1])
    return math.prod(x) * math.prod(w[1:]) if x and w else 0


def conv_matrix(graph: SPAGraph, node: Node) -> WeightMatrix | None:
    """A dense 2-D Conv with a constant kernel [M, C, kh, kw] as [M, C·kh·kw]."""
    if not graph.is_param(node.inputs[1]):
        return None
    w = graph.params[node.inputs[1]].shape
    if node.attr("group", 1) != 1 or len(w) != 4:
        return None
    return WeightMatrix(node.inputs[1], 1, "conv", "conv")


def conv_layer(node: Node, graph: SPAGraph, batch: int) -> LayerShape | None:
    """A dense or depthwise 2-D Conv with a constant kernel, alone at `batch`."""
    if len(node.inputs) < 2 or node.inputs[1] not in graph.params:
        return None
    x, w = graph.shape(node.inputs[0]), graph.shape(node.inputs[1])
    if not x or not w or len(x) != 4 or len(w) != 4:
        return None
    x = (batch, *x[1:])
    group = int(node.attr("group") or 1)
    if conv_kind(group, x[1] // group) not in (DENSE, DEPTHWISE):
        return None
    strides, dilations = tuple(node.attr("strides") or (1, 1)), tuple(node.attr("dilations") or (1, 1))
    return LayerShape("Conv", x, tuple(w), strides, explicit_pads(node, x, w, strides, dilations), dilations, group)


def explicit_pads(node: Node, x: tuple, w: tuple, strides: tuple, dilations: tuple) -> tuple:
    """Explicit pads (top, left, bottom, right); ONNX's auto_pad SAME_* resolved from the shapes."""
    auto = node.attr("auto_pad") or "NOTSET"
    if auto in ("NOTSET", "VALID"):
        return tuple(node.attr("pads") or (0, 0, 0, 0)) if auto == "NOTSET" else (0, 0, 0, 0)
    pads = [same_pads(n, k, s, d)[0] for n, k, s, d in zip(x[2:], w[2:], strides, dilations)]
    if auto == "SAME_LOWER":
        pads = [p[::-1] for p in pads]
    return tuple(b for b, _ in pads) + tuple(e for _, e in pads)


def depthwise_group(surgery: OnnxRewriter, node: Node, proto: Any) -> None:
    """A depthwise convolution's `group` is its channel count: it shrinks with them."""
    w = surgery.old_shape(node.inputs[1])
    assert w is not None  # a constant kernel: its shape is known
    group = node.attr("group")
    if node.op_type == "Conv":
        depthwise = conv_kind(group, w[1]) == DEPTHWISE
    else:  # ConvTranspose: W [C, M/group, k...]
        depthwise = conv_kind(group, w[0] // group) == DEPTHWISE and w[1] == 1
    if depthwise:
        x = surgery.new_shape(node.inputs[0])
        assert x is not None  # surgery rewrites nodes whose input shape is known
        surgery.set_attr(proto, "group", x[1])


def _bind_bias(ctx: Propagation, node: Node, labels: np.ndarray, slot: int = 2) -> None:
    if len(node.inputs) > slot and node.inputs[slot]:
        ctx.bind(node.inputs[slot], 0, labels)


def _input_channels(ctx: Propagation, node: Node) -> np.ndarray | None | Literal[False]:
    """The input's channel labels (or None); False when the kernel is computed, which makes the op a barrier."""
    if not ctx.is_param(node.inputs[1]):
        ctx.freeze(f"{node.op_type} with a computed (non-constant) kernel")
        return False
    labels = ctx.get(node.inputs[0])
    spatial = [l for a, l in labels.items() if a != 1]
    if spatial:
        ctx.freeze("channels on a spatial axis of a convolution input", spatial)
    return labels.get(1)


@register("Conv", creates_channels=True, macs=conv_macs, weight_matrix=conv_matrix, layer=conv_layer,
          rewrite=depthwise_group)
def conv(ctx: Propagation, node: Node) -> None:
    lin = _input_channels(ctx, node)
    if lin is False:
        return
    w = node.inputs[1]
    m, cg = ctx.shape(w)[:2]
    group = node.attr("group")
    c = cg * group
    kind = conv_kind(group, cg)
    if kind == DENSE:
        if lin is not None:
            ctx.bind(w, 1, lin)
        out = ctx.new(m)
    elif kind == DEPTHWISE:
        if lin is None:
            return  # channels tied to unprunable inputs
        out = np.repeat(lin, m // c)
    else:
        if lin is not None:
            per_group = lin.reshape(group, cg)
            for g in range(1, group):
                ctx.union(per_group[0], per_group[g])
            ctx.bind(w, 1, per_group[0])
        out = np.tile(ctx.new(m // group), group)
    ctx.bind(w, 0, out)
    _bind_bias(ctx, node, out)
    ctx.set(node.outputs[0], {1: out})


@register("ConvTranspose", creates_channels=True, macs=conv_transpose_macs, rewrite=depthwise_group)
def conv_transpose(ctx: Propagation, node: Node) -> None:
    lin = _input_channels(ctx, node)
    if lin is False:
        return
    w = node.inputs[1]
    c, mg = ctx.shape(w)[:2]
    group = node.attr("group")
    kind = conv_kind(group, c // group)
    if kind == DENSE:
        if lin is not None:
            ctx.bind(w, 0, lin)
        out = ctx.new(mg)
        ctx.bind(w, 1, out)
    elif kind == DEPTHWISE and mg == 1:
        if lin is None:
            return
        ctx.bind(w, 0, lin)
        out = lin
    else:
        ctx.freeze("grouped transposed convolution")
        return
    _bind_bias(ctx, node, out)
    ctx.set(node.outputs[0], {1: out})
