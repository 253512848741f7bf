"""Run a Keras model and its pruned copy side by side, layer by layer, in one pass.

OBSPA refits each consumer on inputs from the already-pruned network and wants the original network's inputs of the
same samples beside them. Instead of one forward pass per consumer, `run_side_by_side` executes the original
Functional graph operation by operation, and each operation's twin in the copy on the copy's tensors; before an
operation runs, `hook(layer, original_inputs, pruned_inputs)` may rewrite the copy's weights (the refit, new
BatchNorm statistics). Tensors are freed after their last use, so only the live frontier of the graph is held.

Example:

>>> run_side_by_side(model, copy, x, hook)      # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable


def _nodes(functional: Any) -> list[Any]:
    """The graph's operation nodes in an order that computes every input first (Keras's own: deepest first)."""
    by_depth = functional._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]
            if node.operation is not None and not node.is_input]


def run_side_by_side(model: Any, twin: Any, x: Any, hook: Callable[[Any, list, list], None]) -> None:
    """Run `model` and `twin` (same graph, other weights) on the batch `x`, calling `hook(operation,
    original_args, twin_args)` before each operation (args: the operation's tensor arguments)."""
    import keras

    from spa_keras.formats.keras.frontend import graph_model

    functional, twin_functional = graph_model(model), graph_model(twin)
    twin_ops = {op.name: op for op in twin_functional.operations}
    nodes = _nodes(functional)
    uses = Counter(id(t) for node in nodes for t in node.input_tensors)
    inputs = keras.tree.flatten(x)
    values = {id(t): v for t, v in zip(functional.inputs, inputs)}
    twin_values = dict(values)
    for node in nodes:
        args, kwargs = node.arguments.fill_in(values)
        twin_args, twin_kwargs = node.arguments.fill_in(twin_values)
        hook(node.operation, args, twin_args)
        outputs = keras.tree.flatten(node.operation(*args, **kwargs))
        twin_outputs = keras.tree.flatten(twin_ops[node.operation.name](*twin_args, **twin_kwargs))
        for t, v, w in zip(node.outputs, outputs, twin_outputs):
            values[id(t)], twin_values[id(t)] = v, w
        for t in node.input_tensors:  # free what no later operation reads
            uses[id(t)] -= 1
            if uses[id(t)] == 0:
                values.pop(id(t), None)
                twin_values.pop(id(t), None)
