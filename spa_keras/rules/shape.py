"""Reshape, Flatten, Squeeze, Unsqueeze and Transpose: index remapping of labelled axes.

A reshape is traced through the element positions: each labelled axis is spread over the input's shape as channel
positions, reshaped, and read back on the output axes where positions vary. Flatten of [N, C, H, W] gives each
channel H·W consecutive positions; flatten of NHWC tiles the channels instead; both fall out of the same tracing.
When one channel axis is split over several output axes (attention's [N, T, H·D] → [N, T, H, D]), the positions of
one head are merged: whole heads are the prunable units. Shape constants that name a shrinking axis are rewritten in
surgery (including the constant pieces of a Shape→Gather→Concat chain).
"""

import numpy as np

from spa_keras.rules.registry import register, rewriter


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = ctx.shape(x), ctx.shape(y)
    labels = {}
    for axis, l in ctx.get(x).items():
        positions = np.broadcast_to(np.arange(len(l)).reshape([-1 if i == axis else 1 for i in range(len(xs))]), xs)
        positions = np.ascontiguousarray(positions).reshape(ys)
        varying = [j for j in range(len(ys)) if ys[j] > 1 and np.any(np.diff(positions, axis=j) != 0)]
        if not varying:
            continue
        sub = positions[tuple(slice(None) if j in varying else 0 for j in range(len(ys)))]
        rows = sub.reshape(sub.shape[0], -1)
        for k in range(1, rows.shape[1]):  # one channel axis split over several: a row (head) goes as a whole
            ctx.union(l[rows[:, 0]], l[rows[:, k]])
        outer = varying[0]
        if outer in labels:
            ctx.freeze("two channel axes merged into one", [labels[outer], l])
            continue
        labels[outer] = l[rows[:, 0]]
    ctx.set(y, labels)


@register("Transpose")
def transpose(ctx, node):
    rank = ctx.rank(node.inputs[0])
    perm = node.attr("perm", list(range(rank))[::-1])
    labels = ctx.get(node.inputs[0])
    ctx.set(node.outputs[0], {i: labels[p] for i, p in enumerate(perm) if p in labels})


@rewriter("Reshape")
def reshape_target(surgery, node, proto):
    surgery.rewrite_shape_input(node, 1)


@rewriter("Expand")
def expand_target(surgery, node, proto):
    surgery.rewrite_shape_input(node, 1)


@rewriter("Resize")
def resize_sizes(surgery, node, proto):
    if len(node.inputs) > 3 and node.inputs[3]:
        surgery.rewrite_shape_input(node, 3)
