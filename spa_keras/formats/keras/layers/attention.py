"""MultiHeadAttention: query/key/value projections, scaled dot-product attention per head, output projection.

The projections are EinsumDense layers ([D, heads, key_dim] kernels, seen as [D, heads·key_dim]); the attention core
is written as ONNX's Transpose/MatMul/Softmax, so the engine's MatMul rule ties each head of Q to the same head of
K and V and keeps heads whole. Surgery writes the new `num_heads`, `key_dim` and `value_dim` into the config;
`spa.count` counts the projections and Q·Kᵀ and A·V per head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import math

from spa_keras.formats.keras.layers.dense import describe_einsum, einsum_macs
from spa_keras.formats.keras.registry import counts, describes, resizes

if TYPE_CHECKING:
    from spa_keras.formats.keras.builder import Call, GraphBuilder
    from spa_keras.formats.keras.registry import Config, Dims, KerasShape, Weights


def _call_tensors(call: Call) -> tuple[Any, Any, Any]:
    args, kwargs = list(call.args), dict(call.kwargs)
    query = kwargs.get("query", args[0] if args else None)
    value = kwargs.get("value", args[1] if len(args) > 1 else None)
    key = kwargs.get("key", args[2] if len(args) > 2 else None) or value
    return query, key, value


@describes("MultiHeadAttention", "CachedMultiHeadAttention", single=False)
def multi_head_attention(b: GraphBuilder, layer: Any, call: Call) -> bool:
    query, key, value = _call_tensors(call)
    if len(call.outputs) != 1 or not all(isinstance(t, str) for t in (query, key, value)):
        return False  # attention scores returned, a cache, or tensors given in an unusual way
    shapes = [s for t in (query, key, value, call.outputs[0]) for s in [b.shape(t)] if s is not None and len(s) == 3]
    if len(shapes) != 4 or tuple(layer._attention_axes) != (1,):
        return False
    (qs, ks, vs, ys) = shapes
    heads, key_dim, value_dim = layer.num_heads, layer.key_dim, layer.value_dim or layer.key_dim
    t, s = qs[1], ks[1]

    def project(sub: Any, x: str, xs: Dims, tag: str, dim: int, perm: tuple[int, ...], length: int) -> str | None:
        y4 = b.fresh(layer, tag, [1, length, heads, dim])
        if not describe_einsum(b, layer, sub, x, y4, xs, [1, length, heads, dim]):
            return None
        out = b.fresh(layer, tag + "_heads", [[1, length, heads, dim][p] for p in perm])
        b.node(layer, "Transpose", [y4], [out], perm=list(perm))
        return out

    q = project(layer._query_dense, query, qs, "query", key_dim, (0, 2, 1, 3), t)  # [1, H, T, K]
    k = project(layer._key_dense, key, ks, "key", key_dim, (0, 2, 3, 1), s)  # [1, H, K, S]
    v = project(layer._value_dense, value, vs, "value", value_dim, (0, 2, 1, 3), s)  # [1, H, S, V]
    if q is None or k is None or v is None:
        return False
    scores = b.fresh(layer, "scores", [1, heads, t, s])
    b.node(layer, "MatMul", [q, k], [scores])
    probs = b.fresh(layer, "softmax", [1, heads, t, s])
    b.node(layer, "Softmax", [scores], [probs], axis=-1)
    context = b.fresh(layer, "context", [1, heads, t, value_dim])
    b.node(layer, "MatMul", [probs, v], [context])
    merged = b.fresh(layer, "context_bthv", [1, t, heads, value_dim])
    b.node(layer, "Transpose", [context], [merged], perm=[0, 2, 1, 3])
    return describe_einsum(b, layer, layer._output_dense, merged, call.outputs[0], [1, t, heads, value_dim], ys)


@resizes("MultiHeadAttention", "CachedMultiHeadAttention")
def attention_widths(config: Config, layer: Any, weights: Weights, out_shape: Dims | None) -> Config:
    by_path = dict(zip((v.path for v in layer.weights), weights))
    query, value = by_path[layer._query_dense.kernel.path], by_path[layer._value_dense.kernel.path]
    output = by_path[layer._output_dense.kernel.path]
    config["num_heads"], config["key_dim"] = int(query.shape[1]), int(query.shape[2])
    if config.get("value_dim") is not None or value.shape[2] != query.shape[2]:
        config["value_dim"] = int(value.shape[2])
    # without output_shape the output width follows the query's; say it when the two groups differ now
    if config.get("output_shape") is not None or output.shape[-1] != query.shape[0]:
        partial = config.get("output_shape")
        config["output_shape"] = [int(output.shape[-1])] if isinstance(partial, (list, tuple)) else int(
            output.shape[-1])
    return config


@counts("MultiHeadAttention")
def attention_macs(layer: Any, xs: list[KerasShape], ys: list[KerasShape]) -> int:
    """Q, K, V and output projections plus Q·Kᵀ and A·V per head (shapes of every input and output)."""
    query, value = xs[0], xs[1] if len(xs) > 1 else xs[0]
    key = xs[2] if len(xs) > 2 else value
    heads, key_dim = layer._query_dense.kernel.shape[1:]
    value_dim = layer._value_dense.kernel.shape[2]
    t, s = math.prod(d or 1 for d in query[1:-1]), math.prod(d or 1 for d in key[1:-1])
    projections = sum(einsum_macs(d.equation, shape, d.kernel.shape) for d, shape in (
        (layer._query_dense, query), (layer._key_dense, key), (layer._value_dense, value),
        (layer._output_dense, (1,) + tuple(query[1:-1]) + (heads, value_dim))))
    return projections + heads * t * s * (key_dim + value_dim)
