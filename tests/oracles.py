"""The shared test oracles: removal = masking for ONNX and Keras models, and independent counts.

Removal equals masking: for networks whose removed channels end in linear consumers, the slim model's output equals
the original model's output with the consumers' input slices of the removed channels set to zero (`masked_model`
for ONNX, `masked_keras` for Keras). Parameter counts are taken from the written files (`independent_params`).
"""

import numpy as np
import onnx
from onnx import numpy_helper

import spa_keras as spa
from spa_keras.bridges import onnx_io
from spa_keras.common.verify import compare
from spa_keras.common.tensors import random_batch


def consumer_axes(node, graph):
    """{param: input-channel axis} for the linear consumers among `node`'s inputs."""
    if node.op_type == "Conv" and node.attr("group", 1) == 1:
        return {node.inputs[1]: 1}
    if node.op_type == "Conv":  # grouped (not depthwise): axis 1 is the position inside each group
        w = graph.shape(node.inputs[1])
        return {node.inputs[1]: 1} if w[1] > 1 else {}
    if node.op_type == "ConvTranspose" and node.attr("group", 1) == 1:
        return {node.inputs[1]: 0}
    if node.op_type == "Gemm":
        return {node.inputs[1]: 1 if node.attr("transB", 0) else 0}
    if node.op_type == "MatMul" and graph.is_param(node.inputs[1]):
        return {node.inputs[1]: len(graph.shape(node.inputs[1])) - 2}
    return {}


def masked_model(analysis, removed):
    """The original model with the removed channels' consumer input slices zeroed."""
    ga = analysis
    graph = ga.graph
    model = onnx.ModelProto()
    model.CopyFrom(ga.source.analysed_model)
    inits = {i.name: i for i in model.graph.initializer}
    for node in graph.nodes:
        for param, axis in consumer_axes(node, graph).items():
            binding = ga.state.bindings.get((param, axis))
            if binding is None or param not in inits:
                continue
            ids = ga.dense(binding.labels)
            gone = (ids >= 0) & removed[np.maximum(ids, 0)]
            if gone.any():
                value = numpy_helper.to_array(inits[param]).copy()
                index = [slice(None)] * value.ndim
                index[axis] = gone
                value[tuple(index)] = 0
                inits[param].CopyFrom(numpy_helper.from_array(value, param))
    return model


def masked_keras(analysis, removed):
    """The original Keras model with the removed channels' consumer input slices zeroed."""
    import keras

    ga = analysis
    model = ga.source.model
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    original_paths = [v.path for v in model.weights]
    for node in ga.graph.nodes:
        for param, axis in consumer_axes(node, ga.graph).items():
            binding = ga.state.bindings.get((param, axis))
            if binding is None:
                continue
            ids = ga.dense(binding.labels)
            gone = (ids >= 0) & removed[np.maximum(ids, 0)]
            if not gone.any():
                continue
            view = ga.graph.params[param].handle
            for var_axis, kept in view.variable_masks({axis: ~gone}).items():
                dropped = ~kept
                var = masked.weights[original_paths.index(view.variable.path)]
                value = np.asarray(var.numpy()).copy()
                index = [slice(None)] * value.ndim
                index[var_axis] = dropped
                value[tuple(index)] = 0
                var.assign(value)
    for layer in masked._flatten_layers(include_self=False):  # adapted Normalization derives its state from weights
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    return masked


def run(model, x):
    return {"y": np.asarray(model(x, training=False))}


def run_both(a, b, batch=2, seed=0, input_shape=None):
    from spa_keras.common.tensors import parse_input_shape

    feeds = random_batch(onnx_io.input_specs(a), parse_input_shape(input_shape) if input_shape else None,
                         batch=batch, seed=seed)
    return onnx_io.run(a, feeds), onnx_io.run(b, feeds)


def assert_removal_equals_masking(model, input_shape=None, **target):
    analysis = spa.analyze(model, input_shape)
    result = spa.prune(model, analysis=analysis, criterion="l1", **target)
    removed = result.plan.mask(analysis)
    ref, slim = run_both(masked_model(analysis, removed), result.model, input_shape=input_shape)
    check = compare(ref, slim, source="masked", target="slim", tolerance=1e-4)
    assert check.ok, check
    return result


def independent_params(model):
    return sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT) + \
        sum(int(np.prod(a.t.dims)) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
            if a.name == "value" and a.t.data_type == onnx.TensorProto.FLOAT)
