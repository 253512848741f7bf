"""Keras surgery: a slim keras.Model with the same layer classes, names and configs except widths.

The original model is untouched: `keras.models.clone_model` rebuilds the graph from new layers made with
`from_config` (filters, units, groups, target shapes updated), and each new layer gets its old weights sliced along
the axes whose channels were removed. The result is checked with a Keras forward pass.

Example:

>>> slim = prune_keras(analysis, removed)      # doctest: +SKIP
"""

import numpy as np

from spa_keras.cost import CostModel
from spa_keras.errors import ConversionError


def _keep(analysis, labels, removed):
    ids = analysis.dense(labels)
    return ~((ids >= 0) & removed[np.maximum(ids, 0)])


def variable_masks(analysis, removed):
    """{variable path: {variable axis: keep mask}} for every variable that loses positions."""
    graph = analysis.graph
    masks = {}
    for (param, axis), binding in analysis.state.bindings.items():
        keep = _keep(analysis, binding.labels, removed)
        if keep.all():
            continue
        kind, view = graph.params[param].handle
        for var_axis, var_keep in view.variable_masks({axis: keep}).items():
            masks.setdefault(view.variable.path, {})[var_axis] = var_keep
    return masks


def _new_config(layer, new_weights, new_out_shape):
    config = layer.get_config()
    kind = type(layer).__name__
    if kind in ("Conv1D", "Conv2D", "Conv3D"):
        kernel = new_weights[0]
        groups = config.get("groups", 1)
        if groups > 1 and layer.kernel.shape[-2] == 1:  # depthwise written as a grouped conv (ConvNeXt)
            multiplier = layer.filters // groups
            config["groups"] = int(kernel.shape[-1] // multiplier)
        config["filters"] = int(kernel.shape[-1])
    elif kind == "SeparableConv2D":
        config["filters"] = int(new_weights[1].shape[-1])
    elif kind == "Dense":
        config["units"] = int(new_weights[0].shape[-1])
    elif kind == "Embedding":
        config["output_dim"] = int(new_weights[0].shape[-1])
    elif kind == "Reshape":
        config["target_shape"] = tuple(int(d) for d in new_out_shape[1:])
    return config


def prune_keras(analysis, removed):
    """A new keras.Model without the channels in `removed`; the analysed model is not changed."""
    import keras

    graph = analysis.graph
    model = graph.source
    masks = variable_masks(analysis, removed)
    new_shapes = CostModel(analysis).shapes(removed)
    sliced = {}
    for layer in model.layers:
        weights = []
        for var in layer.weights:
            value = np.asarray(var.numpy())
            for axis, keep in masks.get(var.path, {}).items():
                value = np.compress(keep, value, axis=axis)
            weights.append(value)
        sliced[layer.name] = weights

    def out_shape(layer):
        name = layer.output.name
        return new_shapes.get(name) or graph.shape(name) or layer.output.shape

    def clone(layer):
        if isinstance(layer, keras.layers.InputLayer) or layer.name not in sliced:
            return layer.__class__.from_config(layer.get_config())
        config = _new_config(layer, sliced[layer.name], out_shape(layer))
        return layer.__class__.from_config(config)

    try:
        slim = keras.models.clone_model(model, clone_function=clone)
        for layer in slim.layers:
            if layer.weights and layer.name in sliced:
                layer.set_weights(sliced[layer.name])
    except Exception as exc:
        raise ConversionError(f"Keras surgery failed on model '{model.name}': "
                              f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}") from None
    return slim
