"""Keras surgery: a slim keras.Model with the same layer classes, names and configs except widths.

The original model is untouched: `keras.models.clone_model` rebuilds the graph (models used as layers too) from new
layers made with `from_config`, with the widths the layer's registered `resize` writes (filters, units, heads, ...),
and each new layer gets its old weights sliced along the axes whose channels were removed.

Example:

>>> slim = prune_keras(analysis, removed)      # doctest: +SKIP
"""

import contextlib

import numpy as np

from spa_keras.cost import CostModel
from spa_keras.errors import ConversionError, first_line


def _keep(analysis, labels, removed):
    ids = analysis.dense(labels)
    return ~((ids >= 0) & removed[np.maximum(ids, 0)])


def source_masks(analysis, removed):
    """{id(variable) or (id(layer), config key): {source axis: keep mask}} for everything that loses positions."""
    graph = analysis.graph
    masks = {}
    for (param, axis), binding in analysis.state.bindings.items():
        keep = _keep(analysis, binding.labels, removed)
        if keep.all():
            continue
        view = graph.params[param].handle[1]
        key = id(view.variable) if view.variable is not None else (id(view.layer), view.config_key)
        try:
            per_axis = view.variable_masks({axis: keep})
        except ValueError as exc:
            raise ConversionError(f"Keras surgery: {exc}") from None
        for source_axis, source_keep in per_axis.items():
            masks.setdefault(key, {})[source_axis] = source_keep
    return masks


def _slice(value, axis_masks):
    for axis, keep in axis_masks.items():
        value = np.compress(keep, value, axis=axis)
    return value


def _from_config(cls, config):
    """`cls.from_config(config)`; when the config holds keys the constructor does not take (keras-hub's
    ViTPatchingAndEmbedding writes derived sizes), again without them."""
    try:
        return cls.from_config(config)
    except TypeError:
        import inspect

        import keras

        takes = set()
        for c in (cls, keras.layers.Layer):
            takes |= set(inspect.signature(c.__init__).parameters)
        return cls.from_config({k: v for k, v in config.items() if k in takes})


@contextlib.contextmanager
def _naming(layer):
    """Errors of one layer's rebuild name the layer."""
    try:
        yield
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"Keras surgery failed on layer '{layer.name}' ({type(layer).__name__}): "
                              f"{first_line(exc)}") from None


def _new_batch_shape(tensor, graph, new_shapes):
    """The Keras shape of a model input after surgery (a nested model's may narrow); free dimensions stay free."""
    name = graph.layer_outputs.get(id(tensor), tensor.name)
    old, new = graph.shape(name), new_shapes.get(name)
    shape = list(tensor.shape)
    if new is not None:
        shape = [n if d is not None and n != o else d for d, o, n in zip(shape, old, new)]
    return (None,) + tuple(shape[1:])


def prune_keras(analysis, removed):
    """A new keras.Model without the channels in `removed`; the analysed model is not changed."""
    import keras

    from spa_keras.frontends.keras import graph_model
    from spa_keras.frontends.keras.registry import LAYERS

    graph = analysis.graph
    masks = source_masks(analysis, removed)
    new_shapes = CostModel(analysis).shapes(removed)

    def weights_of(layer):
        return [_slice(np.asarray(v.numpy()), masks.get(id(v), {})) for v in layer.weights]

    def out_shape(layer):
        name = graph.layer_outputs.get(id(layer))
        return new_shapes.get(name) or graph.shape(name) if name else None

    def clone_layer(layer):
        with _naming(layer):
            return rebuild(layer)

    def rebuild(layer):
        entry = LAYERS.get(type(layer).__name__)
        if graph_model(layer) is not None:
            if entry is not None and entry.resize is not None:  # a model class with its own config (keras-hub)
                return _from_config(layer.__class__, entry.resize(layer.get_config(), layer, weights_of(layer), None))
            return clone(layer)
        config = layer.get_config()
        for (layer_id, key), axis_masks in ((k, m) for k, m in masks.items() if isinstance(k, tuple)):
            if layer_id == id(layer):
                view = next(p.handle[1] for p in graph.params.values()
                            if p.handle[1].layer is layer and p.handle[1].config_key == key)
                config[key] = _slice(view.read(), axis_masks).tolist()
        if entry is not None and entry.resize is not None and not isinstance(layer, keras.layers.InputLayer):
            config = entry.resize(config, layer, weights_of(layer), out_shape(layer))
        return _from_config(layer.__class__, config)

    def clone(model):
        # new Inputs named like the old InputLayers, with the widths callers now give a model used as a layer
        inputs = [keras.Input(batch_shape=_new_batch_shape(t, graph, new_shapes), dtype=t.dtype,
                              name=t._keras_history[0].name) for t in graph_model(model).inputs]
        inputs = keras.tree.pack_sequence_as(graph_model(model)._inputs_struct, inputs)
        return keras.models.clone_model(model, input_tensors=inputs, clone_function=clone_layer)

    def assign(old, new):
        for layer in old.layers:
            twin = new.get_layer(layer.name)
            # clone_model passes `trainable` to Sequential models only; a model's flag is set before its layers' own
            twin.trainable = layer.trainable
            if graph_model(layer) is not None:
                assign(layer, twin)
            elif layer.weights:
                with _naming(layer):
                    twin.set_weights(weights_of(layer))
                    if hasattr(twin, "finalize_state"):  # adapted preprocessing layers (Normalization) derive state
                        twin.finalize_state()

    model = graph.source
    try:
        slim = clone(model)
        slim.trainable = model.trainable
        assign(model, slim)
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"Keras surgery failed on model '{model.name}': {first_line(exc)}") from None
    return slim
