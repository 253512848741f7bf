"""`spa.count` for Keras models: parameters as `count_params()`, FLOPs = 2 x MACs of the layers that multiply by
weights (Conv*, SeparableConv*, DepthwiseConv*, Conv*Transpose, Dense, EinsumDense, MultiHeadAttention: the
`@counts` of their family module in `layers/`), counted per layer call from Keras's own shapes at batch 1 (free
dimensions as 1), models used as layers walked into.

Example:

>>> count_keras(model).flops          # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Iterator

from spa_keras.analysis.cost import Counts
from spa_keras.formats.keras.layers import spec_of


def _keras_calls(model: Any) -> Iterator[tuple[Any, list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
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


def count_keras(model: Any) -> Counts:
    """`Counts` of a Keras model."""
    macs = 0
    for layer, xs, ys in _keras_calls(model):
        spec = spec_of(layer)
        if spec is not None and spec.macs is not None:
            macs += spec.macs(layer, xs[0] if spec.single else xs, ys[0] if spec.single else ys)
    return Counts(int(model.count_params()), 2 * macs)
