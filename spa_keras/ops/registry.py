"""The one registry of mask-propagation rules, keyed by ONNX op type.

A rule is `rule(ctx, node)`: it reads the channel labels of the node's inputs from `ctx` (a
`spa_keras.analysis.propagation.Propagation`), binds parameters to labels, unions labels that must go together and sets the
labels of the outputs. Rules decide coupling only: what surgery must rewrite afterwards (attributes, shape operands)
lives with each format's surgery. Ops without a rule are barriers (see `spa_keras.analysis.propagation`).

Example:

>>> @register("MyRelu")
... def passthrough(ctx, node):
...     ctx.set(node.outputs[0], ctx.get(node.inputs[0]))
>>> rule_for("MyRelu") is passthrough
True
>>> del RULES["MyRelu"]
"""

from __future__ import annotations

from typing import Callable

Rule = Callable  # rule(ctx: Propagation, node: Node) -> None

RULES: dict[str, Rule] = {}
CREATORS: set[str] = set()  # ops whose rule runs even without labelled inputs: they make channels from constants


def register(*op_types: str, creates_channels: bool = False):
    def wrap(fn: Rule) -> Rule:
        for op in op_types:
            RULES[op] = fn
            if creates_channels:
                CREATORS.add(op)
        return fn

    return wrap


def rule_for(op_type: str) -> Rule | None:
    _load()
    return RULES.get(op_type)


def creates_channels(op_type: str) -> bool:
    _load()
    return op_type in CREATORS


def _load():
    # importing the rule modules fills the registry
    from spa_keras.ops import conv, elementwise, linear, normalization, pooling, shape, slicing, tie  # noqa: F401
