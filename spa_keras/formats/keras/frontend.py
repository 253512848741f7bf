"""Keras front-end: a Keras 3 Functional or Sequential model → `SPAGraph`, without ONNX.

Each layer is described with ONNX operators in its real layout (`layers/*.py`, found through one registry): tensors
keep Keras's channels-last shapes, and ops that ONNX defines channels-first (Conv, BatchNormalization, pooling) are
wrapped in Transposes, so the one set of rules decides coupling for both front-ends. Parameters are views of the
layer's own variables (`KerasView`). Models used as layers are walked into. A layer without a description becomes an
op in the `keras` domain: a barrier the report names.

Example:

>>> graph = from_keras(model)       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from spa_keras.common.errors import InputError
from spa_keras.common.tensors import InputShapes
from spa_keras.formats.keras import layers  # noqa: F401  (fills the registry)
from spa_keras.formats.keras.builder import Call, GraphBuilder, KerasParam  # noqa: F401
from spa_keras.formats.keras.layers.activation import activation_node, is_elementwise
from spa_keras.formats.keras.registry import LAYERS, MODEL_HOOKS, LayerSpec
from spa_keras.formats.keras.view import KerasView  # noqa: F401
from spa_keras.analysis.graph import SPAGraph

# the ONNX opset whose operator semantics the descriptions follow; they write every attribute its schemas default
OPSET = 17


def graph_model(layer: Any) -> Any:
    """The Functional graph behind a Functional or Sequential model (or None for other layers and models)."""
    import keras

    if not isinstance(layer, keras.Model):
        return None
    functional = getattr(layer, "_functional", None) or layer
    if not hasattr(functional, "_nodes_by_depth") or not getattr(functional, "inputs", None):
        return None
    return functional


def require_graph(model: Any) -> Any:
    """The model's Functional graph; a subclassed model (no layer graph) gets an error that points to ONNX."""
    functional = graph_model(model)
    if functional is None:
        raise InputError(f"model '{model.name}' is a subclassed keras.Model without a layer graph; spa-keras prunes "
                         "Functional and Sequential models directly, and others through ONNX: "
                         "spa.prune(model, ..., via='onnx')")
    return functional


def from_keras(model: Any, input_shapes: InputShapes | None = None) -> SPAGraph:
    """Build an `SPAGraph` from a Keras 3 Functional or Sequential model.

    `input_shapes` ({input name or None: shape with batch}) fills input dimensions Keras leaves free; other free
    dimensions are taken as 1, like the ONNX front-end does.
    """
    return describe_model(model, input_shapes)[0]


def describe_model(model: Any, input_shapes: InputShapes | None = None) -> tuple[SPAGraph, dict[int, str]]:
    """(`SPAGraph`, {id(layer or input tensor): graph name of its first output}) of a Keras model: the second maps
    what surgery rebuilds to the shapes the analysis gives it."""
    functional = require_graph(model)
    b = GraphBuilder()
    env: dict[int, str] = {}
    for t in functional.inputs:
        given = (input_shapes or {}).get(t.name, (input_shapes or {}).get(None))
        shape = [1] + [int(given[i]) if given is not None else (d or 1) for i, d in enumerate(t.shape) if i > 0]
        env[id(t)] = b.tensor(t.name, shape)
    _walk(b, functional, env, prefix="", scopes=set())
    graph = SPAGraph(b.nodes, b.shapes, b.params, [env[id(t)] for t in functional.inputs],
                     [env[id(t)] for t in functional.outputs], opset=OPSET)
    return graph, b.layer_outputs


def _walk(b: GraphBuilder, functional: Any, env: dict[int, str], prefix: str, scopes: set[str]) -> None:
    import keras

    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for knode in functional._nodes_by_depth[depth]:
            layer = knode.operation
            if knode.is_input or isinstance(layer, keras.layers.InputLayer):
                continue
            inner = graph_model(layer)
            if inner is not None:  # a model used as a layer: walk into it, its inputs named as the caller's
                scope = f"{prefix}{layer.name}/"
                while scope in scopes:
                    scope = scope[:-1] + "'/"
                scopes.add(scope)
                inner_env = {id(t): env[id(x)] for t, x in zip(inner.inputs, knode.input_tensors)}
                for t in inner.inputs:  # surgery gives the inner model inputs of the new widths
                    b.layer_outputs.setdefault(id(t), inner_env[id(t)])
                _walk(b, inner, inner_env, scope, scopes)
                if type(layer).__name__ in MODEL_HOOKS:
                    MODEL_HOOKS[type(layer).__name__](b, layer)
                for t, x in zip(knode.outputs, inner.outputs):
                    env[id(t)] = inner_env[id(x)]
                continue
            shapes = _output_shapes(b, knode, env)
            for t, shape in zip(knode.outputs, shapes):
                env[id(t)] = b.tensor(prefix + t.name, shape)
            names = {id(t): env[id(t)] for t in knode.input_tensors}
            args, kwargs = knode.arguments.fill_in(names)
            call = Call([env[id(t)] for t in knode.input_tensors], [env[id(t)] for t in knode.outputs], args, kwargs)
            if call.outputs:
                b.layer_outputs.setdefault(id(layer), call.outputs[0])
            describe(b, layer, call)


def _output_shapes(b: GraphBuilder, knode: Any, env: dict[int, str]) -> list[tuple[Any, ...]]:
    """Static output shapes (batch 1). Where Keras leaves a dimension free, ask the layer for its output spec on
    concrete inputs, and where that is still free (EinsumDense with `output_shape=(None, d)`), run it on zeros."""
    shapes = [tuple(t.shape) for t in knode.outputs]
    if all(None not in s[1:] for s in shapes):
        return shapes
    import keras

    inputs = [(t, b.shapes.get(env[id(t)])) for t in knode.input_tensors]
    if any(shape is None for _, shape in inputs):
        return shapes
    attempts = ((knode.operation.compute_output_spec, lambda t, shape: keras.KerasTensor(shape, dtype=t.dtype)),
                (knode.operation, lambda t, shape: keras.ops.zeros(shape, dtype=t.dtype)))
    for run, make in attempts:
        try:
            args, kwargs = knode.arguments.fill_in({id(t): make(t, shape) for t, shape in inputs})
            found = [tuple(o.shape) for o in keras.tree.flatten(run(*args, **kwargs))]
        except Exception:  # unknown shapes: the rules make the ops touching them barriers
            continue
        if all(None not in s[1:] for s in found):
            return found
    return shapes


def describe(b: GraphBuilder, layer: Any, call: Call) -> None:
    entry = LAYERS.get(type(layer).__name__)
    if entry is not None and entry.describe is not None:
        mark = b.checkpoint()
        done = False
        if not entry.single:
            done = entry.describe(b, layer, call)
        elif len(call.inputs) == 1 and len(call.outputs) == 1:
            x, y = call.inputs[0], call.outputs[0]
            done = None not in (b.shape(x), b.shape(y)) and _describe_single(b, entry, layer, x, y)
        if done:
            for v in getattr(layer, "weights", ()):  # variables no node reads (Normalization's count) are still parameters
                b.param(layer, v)
            return
        b.rollback(mark)  # a description that gave up part-way leaves nothing behind
    # no description: a barrier in its own domain, named after the layer class; its weights stay as they are
    weights = [b.param(layer, v) for v in getattr(layer, "weights", ())]
    b.node(layer, type(layer).__name__, call.inputs + weights, call.outputs, domain="keras")


def _describe_single(b: GraphBuilder, entry: LayerSpec, layer: Any, x: str, y: str) -> bool:
    """A one-in, one-out layer; a built-in `activation=` that is not element-wise (softmax, glu, a custom function)
    follows as its own node."""
    assert entry.describe is not None  # `describe` calls it for layers with a description
    fn = getattr(layer, "activation", None)
    if type(layer).__name__ == "Activation" or is_elementwise(fn):
        return entry.describe(b, layer, x, y, b.shape(x), b.shape(y))
    pre = b.fresh(layer, "preactivation", b.shape(y))
    if not entry.describe(b, layer, x, pre, b.shape(x), b.shape(y)):
        return False
    activation_node(b, layer, fn, pre, y)
    return True
