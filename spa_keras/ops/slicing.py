"""Concat, Split and Slice along channel axes: label arrays are concatenated and cut at offsets.

Concat's output channel axis is the inputs' labels end to end (an input without labels there gets frozen fresh
labels, so offsets stay right). Split and Slice hand each output its range; surgery recomputes split sizes and slice
bounds from the channels that remain, which is where other tools get index errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spa_keras.ops.registry import register

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Node, Shape
    from spa_keras.analysis.propagation import Propagation
    from spa_keras.ops.registry import OnnxRewriter


def split_sizes(surgery: OnnxRewriter, node: Node, proto: Any) -> None:
    """The split sizes along a shrinking axis: the outputs' new lengths, where the model says them."""
    x = node.inputs[0]
    old, new = surgery.old_shape(x), surgery.new_shape(x)
    assert old is not None and new is not None  # surgery rewrites nodes whose input shape is known
    axis = node.attr("axis") % len(old)
    if old[axis] == new[axis]:
        return
    sizes = [_known(surgery.new_shape(t))[axis] for t in node.outputs]
    if node.attr("split") is not None:
        surgery.set_attr(proto, "split", sizes)
    elif len(node.inputs) > 1 and node.inputs[1]:
        surgery.set_input_constant(node, 1, np.array(sizes, dtype=np.int64))
    elif len(set(sizes)) > 1:
        surgery.add_input_constant(node, np.array(sizes, dtype=np.int64))


def slice_bounds(surgery: OnnxRewriter, node: Node, proto: Any) -> None:
    """Slice bounds on a shrinking axis: counted again over the positions that stay."""
    x = node.inputs[0]
    spec = slice_params(surgery.ctx, node, len(_known(surgery.old_shape(x))))
    if spec is None:  # bounds computed at run time: the rule froze the channels they cut, none of them goes
        return
    changed = False
    starts: list[int] = []
    ends: list[int] = []
    for axis, start, end, step in spec:
        keep = surgery.kept_positions(x, axis)
        if keep is None or keep.all():
            starts.append(start)
            ends.append(end)
            continue
        lo, hi, _ = slice(start, end).indices(len(keep))  # the rule lets only step 1 cut channels
        new_lo = int(keep[:lo].sum())
        starts.append(new_lo)
        ends.append(new_lo + int(keep[lo:hi].sum()))
        changed = True
    if not changed:
        return
    if len(node.inputs) == 1:
        surgery.set_attr(proto, "starts", starts)
        surgery.set_attr(proto, "ends", ends)
    else:
        surgery.set_input_constant(node, 1, np.array(starts, dtype=np.int64))
        surgery.set_input_constant(node, 2, np.array(ends, dtype=np.int64))


@register("Concat")
def concat(ctx: Propagation, node: Node) -> None:
    y = node.outputs[0]
    rank = ctx.rank(y)
    axis = node.attr("axis") % rank
    parts = [t for t in node.inputs if t]
    pieces, fresh = [], []
    for t in parts:
        l = ctx.get(t).get(axis)
        if l is None:
            l = ctx.new(ctx.shape(t)[axis])
            fresh.append(l)
        pieces.append(l)
    labels = {}
    if len(fresh) < len(parts):
        if fresh:
            ctx.freeze("concatenated with an input whose channels cannot be pruned", fresh)
        labels[axis] = np.concatenate(pieces)
    for other in range(rank):  # the other axes are shared by all inputs, like an element-wise op
        if other == axis:
            continue
        found = [ctx.get(t)[other] for t in parts if other in ctx.get(t)]
        if found and len(found) < len(parts):
            ctx.freeze(f"Concat inputs disagree about channels on axis {other}", found)
            continue
        for l in found[1:]:
            ctx.union(found[0], l)
        if found:
            labels[other] = found[0]
    ctx.set(y, labels)


def _known(shape: Shape | None) -> Shape:
    assert shape is not None  # the shapes a Split or Slice reads and makes are known
    return shape


def _split_sizes(ctx: Propagation, node: Node, length: int) -> list[int]:
    sizes = node.attr("split")
    if sizes is None and len(node.inputs) > 1 and node.inputs[1]:
        value = ctx.value(node.inputs[1])
        sizes = None if value is None else value.tolist()
    if sizes is None:
        n = len(node.outputs)
        sizes = [-(-length // n)] * (n - 1) + [length - (n - 1) * -(-length // n)]
    return [int(s) for s in sizes]


@register("Split", rewrite=split_sizes)
def split(ctx: Propagation, node: Node) -> None:
    x = node.inputs[0]
    rank = ctx.rank(x)
    axis = node.attr("axis") % rank
    labels = ctx.get(x)
    sizes = _split_sizes(ctx, node, ctx.shape(x)[axis])
    offset = 0
    for out, size in zip(node.outputs, sizes):
        own = dict(labels)
        if axis in labels:
            own[axis] = labels[axis][offset:offset + size]
        ctx.set(out, own)
        offset += size


def slice_params(ctx: Propagation, node: Node, rank: int) -> list[tuple[int, int, int, int]] | None:
    """[(axis, start, end, step)] of a Slice, or None when its bounds are computed at run time."""
    if len(node.inputs) == 1:  # opset < 10: attributes
        starts, ends = node.attr("starts"), node.attr("ends")
        axes = node.attr("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        values = [ctx.value(t) if t else None for t in node.inputs[1:5]]
        if values[0] is None or values[1] is None:
            return None
        starts, ends = values[0].tolist(), values[1].tolist()
        axes = values[2].tolist() if len(values) > 2 and values[2] is not None else list(range(len(starts)))
        steps = values[3].tolist() if len(values) > 3 and values[3] is not None else [1] * len(starts)
    return [(a % rank, s, e, st) for a, s, e, st in zip(axes, starts, ends, steps)]


@register("Slice", rewrite=slice_bounds)
def slice_(ctx: Propagation, node: Node) -> None:
    x = node.inputs[0]
    rank = ctx.rank(x)
    labels = dict(ctx.get(x))
    spec = slice_params(ctx, node, rank)
    if spec is None:
        ctx.freeze("Slice with computed bounds", [labels[a] for a in labels])
        return
    for axis, start, end, step in spec:
        if axis not in labels:
            continue
        if step != 1:
            ctx.freeze("strided Slice on a channel axis", [labels.pop(axis)])
            continue
        labels[axis] = labels[axis][slice(*slice(start, end).indices(len(labels[axis])))]
    ctx.set(node.outputs[0], labels)
