"""Normalisation: per-channel parameters follow the channels they normalise.

BatchNormalization and InstanceNormalization bind scale, bias, mean and variance to the channel axis (1).
LayerNormalization normalises over axes [axis, rank): its scale and bias span those axes and are bound to the labels
there (the channels stay coupled through the statistic). GroupNormalization removes whole groups: the channels of
one group merge into one prunable unit, and surgery lowers `num_groups`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spa_keras.ops.registry import register

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Node
    from spa_keras.analysis.propagation import Propagation
    from spa_keras.ops.registry import OnnxRewriter


def group_count(surgery: OnnxRewriter, node: Node, proto: Any) -> None:
    """GroupNormalization's `num_groups` shrinks with the channels (whole groups go)."""
    old, new = surgery.old_shape(node.inputs[0]), surgery.new_shape(node.inputs[0])
    assert old is not None and new is not None  # surgery rewrites nodes whose input shape is known
    old_c, new_c = old[1], new[1]
    if old_c != new_c:
        surgery.set_attr(proto, "num_groups", node.attr("num_groups") * new_c // old_c)


@register("BatchNormalization", "InstanceNormalization")
def batch_norm(ctx: Propagation, node: Node) -> None:
    labels = dict(ctx.get(node.inputs[0]))
    if 1 in labels:
        for t in node.inputs[1:]:
            if t and ctx.is_param(t) and ctx.rank(t) == 1:
                ctx.bind(t, 0, labels[1])
    ctx.set(node.outputs[0], labels)


@register("LayerNormalization")
def layer_norm(ctx: Propagation, node: Node) -> None:
    x = node.inputs[0]
    rank = ctx.rank(x)
    start = node.attr("axis") % rank
    labels = dict(ctx.get(x))
    for axis, l in labels.items():
        if axis < start:
            continue
        for t in node.inputs[1:3]:
            if t and ctx.is_param(t):
                shape = ctx.shape(t)
                own = axis - (rank - len(shape))
                if own >= 0 and shape[own] == len(l) and len(l) > 1:
                    ctx.bind(t, own, l)
    ctx.set(node.outputs[0], labels)


@register("GroupNormalization", rewrite=group_count)
def group_norm(ctx: Propagation, node: Node) -> None:
    labels = dict(ctx.get(node.inputs[0]))
    if 1 in labels:
        groups = node.attr("num_groups")
        per_group = labels[1].reshape(groups, -1)
        for j in range(1, per_group.shape[1]):
            ctx.union(per_group[:, 0], per_group[:, j])
        for t in node.inputs[1:3]:
            if t and ctx.is_param(t):
                size = ctx.shape(t)[0]
                ctx.bind(t, 0, labels[1] if size == len(labels[1]) else per_group[:, 0])
    ctx.set(node.outputs[0], labels)
