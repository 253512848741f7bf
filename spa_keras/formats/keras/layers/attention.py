"""MultiHeadAttention: query/key/value projections, scaled dot-product attention per head, output projection.

The projections are EinsumDense layers ([D, heads, key_dim] kernels, seen as [D, heads·key_dim]); the attention core
is written as ONNX's Transpose/MatMul/Softmax, so the engine's MatMul rule ties each head of Q to the same head of
K and V and keeps heads whole. Surgery writes the new `num_heads`, `key_dim` and `value_dim` into the config.
"""

from spa_keras.formats.keras.layers.dense import describe_einsum
from spa_keras.formats.keras.registry import describes


def _call_tensors(call):
    args, kwargs = list(call.args), dict(call.kwargs)
    query = kwargs.get("query", args[0] if args else None)
    value = kwargs.get("value", args[1] if len(args) > 1 else None)
    key = kwargs.get("key", args[2] if len(args) > 2 else None) or value
    return query, key, value


@describes("MultiHeadAttention", "CachedMultiHeadAttention", single=False)
def multi_head_attention(b, layer, call):
    query, key, value = _call_tensors(call)
    if len(call.outputs) != 1 or not all(isinstance(t, str) for t in (query, key, value)):
        return False  # attention scores returned, a cache, or tensors given in an unusual way
    shapes = [b.shape(t) for t in (query, key, value, call.outputs[0])]
    if any(s is None or len(s) != 3 for s in shapes) or tuple(layer._attention_axes) != (1,):
        return False
    (qs, ks, vs, ys) = shapes
    heads, key_dim, value_dim = layer.num_heads, layer.key_dim, layer.value_dim or layer.key_dim
    t, s = qs[1], ks[1]

    def project(sub, x, xs, tag, dim, perm, length):
        y4 = b.fresh(layer, tag, [1, length, heads, dim])
        if not describe_einsum(b, layer, sub, x, y4, xs, [1, length, heads, dim]):
            return None
        out = b.fresh(layer, tag + "_heads", [[1, length, heads, dim][p] for p in perm])
        b.node(layer, "Transpose", [y4], [out], perm=list(perm))
        return out

    q = project(layer._query_dense, query, qs, "query", key_dim, (0, 2, 1, 3), t)  # [1, H, T, K]
    k = project(layer._key_dense, key, ks, "key", key_dim, (0, 2, 3, 1), s)  # [1, H, K, S]
    v = project(layer._value_dense, value, vs, "value", value_dim, (0, 2, 1, 3), s)  # [1, H, S, V]
    if None in (q, k, v):
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
