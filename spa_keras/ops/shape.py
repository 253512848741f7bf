"""Reshape, Flatten, Squeeze, Unsqueeze and Transpose: index remapping of labelled axes.

A reshape is traced through the element positions: each labelled axis is spread over the input's shape as channel
positions, reshaped, and read back on the output axes where positions vary. Flatten of [N, C, H, W] gives each channel
H·W consecutive positions; flatten of NHWC tiles the channels instead; both fall out of the same tracing. When one
channel axis is split over several output axes (attention's [N, T, H·D] → [N, T, H, D], a channel shuffle's [N, g·c,
H, W] → [N, g, c, H, W]) its labels travel as a grid through Reshape and Transpose. An op that computes on the grid
sees whole rows (heads) as the prunable units; a grid reshaped back into one axis (channel shuffle) keeps the finer of
rows and columns, so the removal stays rectangular and every group loses alike. Shape constants that name a shrinking
axis are rewritten in surgery (including the constant pieces of a Shape→Gather→Concat chain).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spa_keras.ops.registry import register

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Node, Shape
    from spa_keras.analysis.propagation import Propagation
    from spa_keras.ops.registry import OnnxRewriter


def shape_target(surgery: OnnxRewriter, node: Node, proto: Any) -> None:
    """Reshape and Expand: the target shape operand names the new channel counts."""
    surgery.rewrite_shape_input(node, 1)


def _trace(ctx: Propagation, xs: Shape, ys: Shape, axes: tuple[int, ...], grid: np.ndarray
           ) -> tuple[list[int], np.ndarray]:
    """Where the positions of a label `grid` over input `axes` land in the output: (varying axes, grid there)."""
    positions = np.arange(grid.size).reshape(grid.shape)
    shape = [xs[i] if i in axes else 1 for i in range(len(xs))]
    spread = np.broadcast_to(positions.reshape(shape), xs)
    spread = np.ascontiguousarray(spread).reshape(ys)
    varying = [j for j in range(len(ys)) if ys[j] > 1 and np.any(np.diff(spread, axis=j) != 0)]
    sub = spread[tuple(slice(None) if j in varying else 0 for j in range(len(ys)))]
    return varying, grid.reshape(-1)[sub]


@register("Reshape", rewrite=shape_target)
@register("Flatten", "Squeeze", "Unsqueeze")
def reshape(ctx: Propagation, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = ctx.shape(x), ctx.shape(y)
    pieces: list[tuple[tuple[int, ...], np.ndarray]] = [((axis,), l) for axis, l in ctx.get(x, grids=True).items()]
    if x in ctx.grids:
        pieces.append(ctx.grids[x])
    labels: dict[int, np.ndarray] = {}
    for axes, grid in pieces:
        if len(axes) > 1 and _merges(ctx, xs, ys, axes, grid):
            # a grid merged back into one axis (a channel shuffle): the removal must stay rectangular, so keep the
            # finer of its two ways apart (rows or columns) and merge along the other
            grid = _rectangular(ctx, grid)
        varying, mapped = _trace(ctx, xs, ys, axes, grid)
        if not varying:
            continue
        if len(varying) > 1:
            if y in ctx.grids or any(a in labels for a in varying):
                ctx.freeze("two channel axes merged into one", [grid.reshape(-1)])
                continue
            ctx.set_grid(y, varying, mapped)
            continue
        if varying[0] in labels:
            ctx.freeze("two channel axes merged into one", [labels[varying[0]], grid.reshape(-1)])
            continue
        labels[varying[0]] = mapped
    ctx.set(y, {**ctx.labels.get(y, {}), **labels})


def _merges(ctx: Propagation, xs: Shape, ys: Shape, axes: tuple[int, ...], grid: np.ndarray) -> bool:
    varying, _ = _trace(ctx, xs, ys, axes, np.zeros(grid.shape, np.int64) + np.arange(grid.size).reshape(grid.shape))
    return len(varying) == 1


def _rectangular(ctx: Propagation, grid: np.ndarray) -> np.ndarray:
    flat = grid.reshape(grid.shape[0], -1)
    if flat.shape[0] >= flat.shape[1]:  # rows are the finer unit: a row's cells go together
        for k in range(1, flat.shape[1]):
            ctx.union(flat[:, 0], flat[:, k])
    else:  # columns are: a column's cells go together
        for k in range(1, flat.shape[0]):
            ctx.union(flat[0], flat[k])
    return grid


@register("Transpose")
def transpose(ctx: Propagation, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    rank = ctx.rank(x)
    perm = node.attr("perm", list(range(rank))[::-1])
    labels = ctx.get(x, grids=True)
    ctx.set(y, {i: labels[p] for i, p in enumerate(perm) if p in labels})
    if x in ctx.grids:
        axes, grid = ctx.grids[x]
        ctx.set_grid(y, [perm.index(a) for a in axes], grid)
