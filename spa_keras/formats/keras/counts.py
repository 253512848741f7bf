"""`spa.count` for Keras models: parameters as `count_params()`, FLOPs = 2 x MACs of the layers that multiply by
weights (Conv*, SeparableConv*, DepthwiseConv*, Conv*Transpose, Dense, EinsumDense, MultiHeadAttention), counted
per layer call from Keras's own shapes at batch 1 (free dimensions as 1), models used as layers walked into.

Example:

>>> count_keras(model).flops          # doctest: +SKIP
"""

import numpy as np

from spa_keras.analysis.cost import Counts


def _elems(shape):
    return int(np.prod([d or 1 for d in shape[1:]]))  # free dimensions count as 1, as in the engine


def _keras_conv(layer, xs, ys):
    return _elems(ys) * int(np.prod(layer.kernel.shape[:-1]))  # kernel (*k, in/groups, out)


def _keras_conv_transpose(layer, xs, ys):
    return _elems(xs) * int(np.prod(layer.kernel.shape[:-1]))  # kernel (*k, out, in)


def _keras_depthwise(layer, xs, ys):
    return _elems(ys) * int(np.prod(layer.kernel.shape[:-2]))  # kernel (*k, in, multiplier)


def _keras_separable(layer, xs, ys):
    dw = layer.depthwise_kernel.shape  # (*k, in, multiplier)
    pw = layer.pointwise_kernel.shape  # (*1, in*mult, out)
    spatial = _elems(ys) // pw[-1]
    return spatial * pw[-2] * int(np.prod(dw[:-2])) + _elems(ys) * pw[-2]


def _keras_dense(layer, xs, ys):
    return _elems(ys) * layer.kernel.shape[0]


def _einsum_macs(equation, x_shape, kernel_shape):
    """MACs of a two-operand einsum: the product of the sizes of all its distinct indices (batch and free
    dimensions as 1)."""
    x, rest = equation.replace(" ", "").split(",")
    k = rest.split("->")[0]
    if "..." in x:
        x = x.replace("...", "#" * (len(x_shape) - len(x) + 3))
    sizes = {c: d or 1 for c, d in zip(x[1:], x_shape[1:]) if c != "#"}
    sizes.update(zip(k, kernel_shape))
    return int(np.prod(list(sizes.values()))) * int(np.prod([d or 1 for c, d in zip(x, x_shape) if c == "#"]))


def _keras_einsum(layer, xs, ys):
    return _einsum_macs(layer.equation, xs, layer.kernel.shape)


def _keras_attention(layer, xs, ys):
    """Q, K, V and output projections plus Q·Kᵀ and A·V per head."""
    query, value = xs[0], xs[1] if len(xs) > 1 else xs[0]
    key = xs[2] if len(xs) > 2 else value
    heads, key_dim = layer._query_dense.kernel.shape[1:]
    value_dim = layer._value_dense.kernel.shape[2]
    t, s = int(np.prod([d or 1 for d in query[1:-1]])), int(np.prod([d or 1 for d in key[1:-1]]))
    projections = sum(_einsum_macs(d.equation, shape, d.kernel.shape) for d, shape in (
        (layer._query_dense, query), (layer._key_dense, key), (layer._value_dense, value),
        (layer._output_dense, (1,) + tuple(query[1:-1]) + (heads, value_dim))))
    return projections + heads * t * s * (key_dim + value_dim)


KERAS_MACS = {"Conv1D": _keras_conv, "Conv2D": _keras_conv, "Conv3D": _keras_conv,
              "Conv1DTranspose": _keras_conv_transpose, "Conv2DTranspose": _keras_conv_transpose,
              "Conv3DTranspose": _keras_conv_transpose, "DepthwiseConv1D": _keras_depthwise,
              "DepthwiseConv2D": _keras_depthwise, "SeparableConv1D": _keras_separable,
              "SeparableConv2D": _keras_separable, "Dense": _keras_dense, "EinsumDense": _keras_einsum,
              "MultiHeadAttention": _keras_attention}
SINGLE = {"MultiHeadAttention": False}


def _keras_calls(model):
    """(layer, input shapes, output shapes) for every call of every layer, models used as layers walked into."""
    functional = getattr(model, "_functional", None) or model
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for node in functional._nodes_by_depth[depth]:
            layer = node.operation
            if node.is_input:
                continue
            if hasattr(layer, "_nodes_by_depth") or getattr(layer, "_functional", None) is not None:
                yield from _keras_calls(layer)
            else:
                yield layer, [tuple(t.shape) for t in node.input_tensors], [tuple(t.shape) for t in node.outputs]


def count_keras(model) -> Counts:
    """`Counts` of a Keras model."""
    macs = 0
    for layer, xs, ys in _keras_calls(model):
        kind = type(layer).__name__
        if kind in KERAS_MACS:
            macs += KERAS_MACS[kind](layer, xs if not SINGLE.get(kind, True) else xs[0],
                                     ys if not SINGLE.get(kind, True) else ys[0])
    return Counts(int(model.count_params()), 2 * macs)
