"""The registry of op converters, keyed by ONNX op type (default domain).

A converter adds the Keras layers for one ONNX node: it reads its inputs from the `Builder` (Keras tensors in their
layouts, or constants), calls the layers and registers the node's outputs with `Builder.set`. It is called as
`converter(builder, node, attributes)`, the attributes over their schema's defaults, and raises `ConversionError`
(through `refuse`) for what no Keras layer reproduces. The op modules fill `CONVERTERS` with `converts`, as onnx's
reference evaluator registers one implementation per operator; the package imports every op module.

Example:

>>> @converts("Identity", "Dropout")                        # doctest: +SKIP
... def identity(b, node, a):
...     b.set(node.output[0], b.tensor(node.input[0]), b.layouts[node.input[0]])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import onnx

if TYPE_CHECKING:
    from spa_keras.bridges.onnx_to_keras.builder import Builder

Converter = Callable[["Builder", onnx.NodeProto, dict[str, Any]], None]

CONVERTERS: dict[str, Converter] = {}


def converts(*op_types: str) -> Callable[[Converter], Converter]:
    """Register the decorated function as the converter of each of `op_types`.

    Args:
        *op_types: ONNX op types of the default domain ("Conv", "ConvTranspose", ...).

    Returns:
        A decorator that fills `CONVERTERS` and returns the function unchanged.
    """
    def wrap(fn: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
        return fn

    return wrap
