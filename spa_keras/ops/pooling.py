"""Pooling, padding, resizing and reductions: they act on spatial axes and keep channels apart.

Labels pass through on every axis whose size is unchanged. Padding or resizing a channel axis, and reducing over
one, are barriers, with one exception: ReduceMean and ReduceL2 over channels (the statistics of a decomposed
LayerNorm or an L2 normalisation) keep the structure valid when channels go, so they pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spa_keras.ops.registry import register
from spa_keras.ops.shape import shape_target

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Node
    from spa_keras.analysis.propagation import Propagation
    from spa_keras.ops.registry import OnnxRewriter

REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin")
STATISTICS = ("ReduceMean", "ReduceL2")


@register("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool", "MaxRoiPool")
def pool(ctx: Propagation, node: Node) -> None:
    labels = dict(ctx.get(node.inputs[0]))
    spatial = [labels.pop(a) for a in list(labels) if a > 1]
    if spatial and node.op_type != "GlobalAveragePool":  # a global mean is a statistic, like ReduceMean
        ctx.freeze("pooling over a channel axis", spatial)
    ctx.set(node.outputs[0], labels)


def resize_sizes(surgery: OnnxRewriter, node: Node, proto: Any) -> None:
    """Resize given by `sizes`: they name the new channel counts."""
    if len(node.inputs) > 3 and node.inputs[3]:
        surgery.rewrite_shape_input(node, 3)


@register("Expand", creates_channels=True, rewrite=shape_target)
@register("Tile", creates_channels=True)
@register("Resize", rewrite=resize_sizes)
@register("Pad", "Upsample", "SpaceToDepth", "DepthToSpace", "LpNormalization")
def same_size_axes(ctx: Propagation, node: Node) -> None:
    """Labels survive on axes whose size is unchanged; an op that changes a channel axis is a barrier."""
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = ctx.shape(x), ctx.shape(y)
    if node.op_type in ("Expand", "Tile") and ctx.is_param(x):
        # a constant broadcast at run time (a position embedding): its full-size axes are channels it can lose
        labels = {}
        for axis in range(len(ys)):
            own = axis - (len(ys) - len(xs))
            if own >= 0 and xs[own] == ys[axis] > 1:
                labels[axis] = ctx.new(ys[axis])
                ctx.bind(x, own, labels[axis])
        ctx.set(y, labels)
        return
    labels = dict(ctx.get(x))
    if node.op_type in ("SpaceToDepth", "DepthToSpace") and 1 in labels:
        ctx.freeze(f"{node.op_type} moves channels", [labels.pop(1)])
    if len(xs) != len(ys):
        ctx.freeze(f"{node.op_type} changes the rank")
        return
    changed = [labels.pop(a) for a in list(labels) if xs[a] != ys[a]]
    if changed:
        ctx.freeze(f"{node.op_type} changes the size of a channel axis", changed)
    ctx.set(y, labels)


def _reduce_axes(ctx: Propagation, node: Node, rank: int) -> list[int]:
    axes = node.attr("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        value = ctx.value(node.inputs[1])
        axes = None if value is None else value.tolist()
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [node.attr("axis")]
    if axes is None:
        if node.attr("noop_with_empty_axes"):
            return []
        return list(range(rank))
    return sorted(a % rank for a in np.atleast_1d(axes))


@register(*REDUCE)
def reduce(ctx: Propagation, node: Node) -> None:
    x = node.inputs[0]
    rank = ctx.rank(x)
    axes = _reduce_axes(ctx, node, rank)
    keep = node.attr("keepdims")
    labels = {}
    for axis, l in ctx.get(x).items():
        if axis in axes:
            if node.op_type not in STATISTICS:
                ctx.freeze(f"{node.op_type} over a channel axis", [l])
            continue
        labels[axis if keep else axis - sum(a < axis for a in axes)] = l
    ctx.set(node.outputs[0], labels)
