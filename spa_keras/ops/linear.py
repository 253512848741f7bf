"""Gemm, MatMul and embedding Gather.

A constant weight's output axis makes new labels; its input axis takes the labels of the activation's contracted
axis. MatMul of two activations (attention's Q·Kᵀ and A·V) merges the contracted axes' labels and the batch axes'
labels (heads), so a head removed in Q is removed in K and V too.

MACs: output elements times the contracted size. OBSPA refits a constant 2-D weight as [d_out, d_in]; latency
tables time Gemm and MatMul with a constant 2-D weight alone.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from spa_keras.ops.geometry import LayerShape
from spa_keras.ops.registry import WeightMatrix, register

if TYPE_CHECKING:
    import numpy as np

    from spa_keras.analysis.graph import Node, SPAGraph
    from spa_keras.analysis.propagation import Propagation
    from spa_keras.ops.registry import ShapeOf


def matmul_macs(node: Node, shape_of: ShapeOf) -> int:
    a, y = shape_of(node.inputs[0]), shape_of(node.outputs[0])
    return math.prod(y) * a[-1] if a and y else 0


def gemm_macs(node: Node, shape_of: ShapeOf) -> int:
    a, y = shape_of(node.inputs[0]), shape_of(node.outputs[0])
    return math.prod(y) * (a[0] if node.attr("transA") else a[-1]) if a and y else 0


def gemm_matrix(graph: SPAGraph, node: Node) -> WeightMatrix | None:
    if not graph.is_param(node.inputs[1]) or node.attr("transA", 0):
        return None
    trans_b = node.attr("transB", 0)
    return WeightMatrix(node.inputs[1], 1 if trans_b else 0, "dense", "rows" if trans_b else "cols")


def matmul_matrix(graph: SPAGraph, node: Node) -> WeightMatrix | None:
    if not graph.is_param(node.inputs[1]) or len(graph.params[node.inputs[1]].shape) != 2:
        return None
    return WeightMatrix(node.inputs[1], 0, "dense", "cols")


def dense_layer(node: Node, graph: SPAGraph, batch: int) -> LayerShape | None:
    """Gemm (not transA, 2-D input) or MatMul with a constant 2-D weight, alone at `batch`; the weight as (K, N) for
    MatMul and (N, K) for Gemm (transB)."""
    if len(node.inputs) < 2 or node.inputs[1] not in graph.params:
        return None
    x, w = graph.shape(node.inputs[0]), graph.shape(node.inputs[1])
    if not x or not w:
        return None
    x = (batch, *x[1:])
    if len(w) != 2 or (node.op_type == "Gemm" and (node.attr("transA") or len(x) != 2)):
        return None
    w = tuple(w) if node.op_type == "MatMul" or node.attr("transB") else tuple(w[::-1])
    return LayerShape(node.op_type, x, w)


@register("Gemm", creates_channels=True, macs=gemm_macs, weight_matrix=gemm_matrix, layer=dense_layer)
def gemm(ctx: Propagation, node: Node) -> None:
    a, b = node.inputs[0], node.inputs[1]
    trans_a, trans_b = node.attr("transA"), node.attr("transB")
    al = ctx.get(a)
    k_axis_a, m_axis_a = (0, 1) if trans_a else (1, 0)
    if m_axis_a in al:
        ctx.freeze("Gemm with channels on its row axis", [al[m_axis_a]])
    lin = al.get(k_axis_a)
    if not ctx.is_param(b):
        bl = ctx.get(b)
        k_axis_b, n_axis_b = (1, 0) if trans_b else (0, 1)
        _contract(ctx, lin, bl.get(k_axis_b), a, b)
        out = bl.get(n_axis_b)
    else:
        k_axis_b, n_axis_b = (1, 0) if trans_b else (0, 1)
        if lin is not None:
            ctx.bind(b, k_axis_b, lin)
        out = ctx.new(ctx.shape(b)[n_axis_b])
        ctx.bind(b, n_axis_b, out)
    if out is not None and len(node.inputs) > 2 and node.inputs[2] and ctx.is_param(node.inputs[2]):
        c_shape = ctx.shape(node.inputs[2])
        if c_shape and c_shape[-1] == len(out) and len(out) > 1:
            ctx.bind(node.inputs[2], len(c_shape) - 1, out)
    ctx.set(node.outputs[0], {1: out} if out is not None else {})


def _contract(ctx: Propagation, la: np.ndarray | None, lb: np.ndarray | None, a: str, b: str) -> None:
    if la is not None and lb is not None:
        ctx.union(la, lb)
    elif la is not None or lb is not None:
        ctx.freeze("contracted axis with channels on one side only", [l for l in (la, lb) if l is not None])


@register("MatMul", creates_channels=True, macs=matmul_macs, weight_matrix=matmul_matrix, layer=dense_layer)
def matmul(ctx: Propagation, node: Node) -> None:
    a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
    ra, rb, ry = ctx.rank(a), ctx.rank(b), ctx.rank(y)
    if ra < 2 or rb < 2:
        ctx.freeze("MatMul with a 1-D operand")
        return
    al, bl = ctx.get(a), ctx.get(b)
    labels = {}
    if ctx.is_param(a):
        if bl:
            ctx.freeze("MatMul with a constant left operand")
        return
    if ctx.is_param(b):
        if ra - 1 in al:
            ctx.bind(b, rb - 2, al[ra - 1])
        out = ctx.new(ctx.shape(b)[-1])
        ctx.bind(b, rb - 1, out)
        labels[ry - 1] = out
        if rb > 2:
            ctx.freeze("MatMul with a batched constant weight")
    else:
        _contract(ctx, al.get(ra - 1), bl.get(rb - 2), a, b)
        if rb - 1 in bl:
            labels[ry - 1] = bl[rb - 1]
    if ra - 2 in al:
        labels[ry - 2] = al[ra - 2]
    # batch axes (heads): aligned from the right, merged where both operands span them; channels on one side only
    # meet an operand that keeps all of its (a head computed from a graph input, or over which a Softmax ran)
    for axis in range(ry - 2):
        la = al.get(axis - (ry - ra)) if axis - (ry - ra) >= 0 else None
        lb = None if ctx.is_param(b) else (bl.get(axis - (ry - rb)) if axis - (ry - rb) >= 0 else None)
        if la is not None and lb is not None:
            ctx.union(la, lb)
        found = la if la is not None else lb
        if found is None:
            continue
        other, rank = (b, rb) if la is not None else (a, ra)
        spans = axis - (ry - rank) >= 0 and (ctx.shape(other) or (None,) * rank)[axis - (ry - rank)] != 1
        if (la is None or lb is None) and spans and not ctx.is_param(b):
            ctx.freeze(f"MatMul batch axis {axis} with channels on one side only", [found])
            continue
        labels[axis] = found
    ctx.set(y, labels)


@register("Gather", creates_channels=True)
def gather(ctx: Propagation, node: Node) -> None:
    data, indices, y = node.inputs[0], node.inputs[1], node.outputs[0]
    axis = node.attr("axis") % ctx.rank(data)
    dl = ctx.get(data)
    if ctx.is_param(data) and not ctx.is_param(indices):
        if ctx.rank(data) == 2 and axis == 0:  # an embedding table: rows are looked up, columns are channels
            out = ctx.new(ctx.shape(data)[1])
            ctx.bind(data, 1, out)
            ctx.set(y, {ctx.rank(y) - 1: out})
        return
    if axis in dl:
        ctx.freeze("Gather along a channel axis", [dl[axis]])
    shift = ctx.rank(indices) - 1  # the gathered axis is replaced by the indices' axes
    ctx.set(y, {(a if a < axis else a + shift): l for a, l in dl.items() if a != axis})


