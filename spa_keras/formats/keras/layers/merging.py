"""Merge layers: element-wise merges couple the channels of all inputs; Concatenate stacks them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from spa_keras.formats.keras.registry import describes

if TYPE_CHECKING:
    from spa_keras.formats.keras.builder import Call, GraphBuilder

MERGE = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Average": "Mean", "Maximum": "Max", "Minimum": "Min"}


def _merge(op: str) -> Callable[..., bool]:
    def describe(b: GraphBuilder, layer: Any, call: Call) -> bool:
        if len(call.outputs) != 1:
            return False
        b.node(layer, op, call.inputs, call.outputs)
        return True
    return describe


for _kind, _op in MERGE.items():
    describes(_kind, single=False)(_merge(_op))


@describes("Concatenate", single=False)
def concatenate(b: GraphBuilder, layer: Any, call: Call) -> bool:
    shape = b.shape(call.outputs[0]) if len(call.outputs) == 1 else None
    if shape is None:
        return False
    b.node(layer, "Concat", call.inputs, call.outputs, axis=layer.axis % len(shape))
    return True
