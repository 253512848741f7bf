"""Keras surgery: a slim keras.Model with the same layer classes, names and configs except widths.

The original model is untouched: `keras.models.clone_model` rebuilds the graph (models used as layers too) from new
layers made with `from_config`, with the widths the layer's resizer writes (the `@resizes` of its family module in
`layers/`: filters, units, heads, ...), and each new layer gets its old weights (or the new values a plan carries for
kept weights) sliced along the axes whose channels were removed. The slim model is compiled like the source when the
source was compiled.

`mask_keras` is the other use of the same masks: it zeroes the removed channels of every member variable of a live
model in place (what training with a fixed mask needs).

Example:

>>> slim = prune_keras(analysis, removed)      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Hashable, Iterator, cast

import numpy as np

from spa_keras.common.errors import ConversionError, first_line
from spa_keras.formats.masking import sliced, zeroed
from spa_keras.formats.keras.layers import spec_of
from spa_keras.formats.keras.view import view_of

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Shape
    from spa_keras.analysis.groups import Analysis
    from spa_keras.formats.keras.source import KerasSource


class SourceMasks:
    """The engine's per-parameter keep masks, seen on the Keras variables and config constants they view."""

    def __init__(self, analysis: Analysis, removed: np.ndarray, updates: dict[str, np.ndarray] | None = None) -> None:
        self.graph = analysis.graph
        self.updates = updates or {}
        self.param_of: dict[Hashable, str] = {}  # id(variable) or (id(layer), config key) -> parameter name
        for name, p in self.graph.params.items():
            view = view_of(p)
            self.param_of[id(view.variable) if view.variable is not None else (id(view.layer), view.config_key)] = name
        self.masks: dict[str, dict[int, np.ndarray]] = {}  # parameter -> {source axis: keep}
        for param, view_masks in analysis.param_masks(removed).items():
            try:
                self.masks[param] = view_of(self.graph.params[param]).variable_masks(view_masks)
            except ValueError as exc:
                raise ConversionError(f"Keras surgery: {exc}") from exc

    def value(self, param: str) -> np.ndarray:
        """The parameter's full value in the source layout: its new value when the plan carries one."""
        view = view_of(self.graph.params[param])
        return view.unview(self.updates[param]) if param in self.updates else view.read()

    def sliced_value(self, variable: Any) -> np.ndarray:
        param = self.param_of.get(id(variable))
        if param is None:  # a variable the front-end never saw (it reads no channels)
            return np.asarray(variable.numpy())
        return sliced(self.value(param), self.masks.get(param, {}))

    def weights_of(self, layer: Any) -> list[np.ndarray]:
        return [self.sliced_value(v) for v in layer.weights]

    def config_constants(self, layer: Any) -> dict[str, np.ndarray]:
        """{config key: sliced value} of the layer's per-channel config constants that change."""
        out: dict[str, np.ndarray] = {}
        for key, param in self.param_of.items():
            if isinstance(key, tuple) and key[0] == id(layer) and (param in self.masks or param in self.updates):
                out[key[1]] = sliced(self.value(param), self.masks.get(param, {}))
        return out


def _from_config(cls: Any, config: dict[str, Any]) -> Any:
    """`cls.from_config(config)`; when the config holds keys the constructor does not take (keras-hub's
    ViTPatchingAndEmbedding writes derived sizes), again without them."""
    try:
        return cls.from_config(config)
    except TypeError:
        import inspect

        import keras

        takes: set[str] = set()
        for c in (cls, keras.layers.Layer):
            takes |= set(inspect.signature(c.__init__).parameters)
        return cls.from_config({k: v for k, v in config.items() if k in takes})


@contextlib.contextmanager
def _naming(layer: Any) -> Iterator[None]:
    """Errors of one layer's rebuild name the layer."""
    try:
        yield
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"Keras surgery failed on layer '{layer.name}' ({type(layer).__name__}): "
                              f"{first_line(exc)}") from exc


class KerasSurgery:
    """Rebuilds the analysed model without the removed channels (`apply`)."""

    def __init__(self, analysis: Analysis, removed: np.ndarray, updates: dict[str, np.ndarray] | None = None) -> None:
        self.graph = analysis.graph
        self.model = analysis.source.model
        self.layer_outputs = cast("KerasSource", analysis.source).layer_outputs
        self.sources = SourceMasks(analysis, removed, updates)
        self.new_shapes = analysis.cost.shapes(removed)

    def out_shape(self, layer: Any) -> Shape | None:
        name = self.layer_outputs.get(id(layer))
        return self.new_shapes.get(name) or self.graph.shape(name) if name else None

    def new_batch_shape(self, tensor: Any) -> tuple[int | None, ...]:
        """The Keras shape of a model input after surgery (a nested model's may narrow); free dimensions stay."""
        name = self.layer_outputs.get(id(tensor), tensor.name)
        old, new = self.graph.shape(name), self.new_shapes.get(name)
        shape = list(tensor.shape)
        if new is not None:
            assert old is not None  # a shape the cost model changed is known
            shape = [n if d is not None and n != o else d for d, o, n in zip(shape, old, new)]
        return (None,) + tuple(shape[1:])

    def clone_layer(self, layer: Any) -> Any:
        import keras

        from spa_keras.formats.keras.frontend import graph_model

        with _naming(layer):
            spec = spec_of(layer)
            resize = None if spec is None else spec.resize
            if graph_model(layer) is not None:
                if resize is not None:  # a model class with its own config (keras-hub)
                    return _from_config(layer.__class__, resize(layer.get_config(), layer,
                                                                self.sources.weights_of(layer), None))
                return self.clone(layer)
            config = layer.get_config()
            for key, value in self.sources.config_constants(layer).items():
                config[key] = value.tolist()
            if resize is not None and not isinstance(layer, keras.layers.InputLayer):
                config = resize(config, layer, self.sources.weights_of(layer), self.out_shape(layer))
            return _from_config(layer.__class__, config)

    def clone(self, model: Any) -> Any:
        import keras

        from spa_keras.formats.keras.frontend import graph_model

        # new Inputs named like the old InputLayers, with the widths callers now give a model used as a layer
        inputs = [keras.Input(batch_shape=self.new_batch_shape(t), dtype=t.dtype, name=t._keras_history[0].name)
                  for t in graph_model(model).inputs]
        inputs = keras.tree.pack_sequence_as(graph_model(model)._inputs_struct, inputs)
        return keras.models.clone_model(model, input_tensors=inputs, clone_function=self.clone_layer)

    def assign(self, old: Any, new: Any) -> None:
        from spa_keras.formats.keras.frontend import graph_model

        for layer in old.layers:
            twin = new.get_layer(layer.name)
            # clone_model passes `trainable` to Sequential models only; a model's flag is set before its layers' own
            twin.trainable = layer.trainable
            if graph_model(layer) is not None:
                self.assign(layer, twin)
            elif layer.weights:
                with _naming(layer):
                    twin.set_weights(self.sources.weights_of(layer))
                    if hasattr(twin, "finalize_state"):  # adapted preprocessing layers (Normalization) derive state
                        twin.finalize_state()

    def apply(self) -> Any:
        model = self.model
        try:
            slim = self.clone(model)
            slim.trainable = model.trainable
            self.assign(model, slim)
            compile_like(model, slim)
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(f"Keras surgery failed on model '{model.name}': {first_line(exc)}") from exc
        return slim


def compile_like(source: Any, slim: Any) -> None:
    """Compile `slim` with the source's optimizer class and settings, loss and metrics, when the source was
    compiled. The optimizer is a fresh one and is left unbuilt, as `compile` leaves it: `compile_from_config`
    would also build its slot variables (momentum, RMS, Adam's moments), all zeros that say nothing yet, but are
    saved with the model and make the slim file about as large as an unpruned one saved without them. They are
    made, for the slim shapes, at the first training step."""
    import keras

    config = source.get_compile_config() if getattr(source, "compiled", False) else None
    if config:
        slim.compile(**keras.saving.deserialize_keras_object(config))


def prune_keras(analysis: Analysis, removed: np.ndarray, updates: dict[str, np.ndarray] | None = None) -> Any:
    """A new keras.Model without the channels in `removed` (kept weights from `updates` where given); the analysed
    model is not changed."""
    return KerasSurgery(analysis, removed, updates).apply()


def mask_keras(analysis: Analysis, removed: np.ndarray, updates: dict[str, np.ndarray] | None = None) -> Any:
    """Zero, in the analysed (live) model itself, every position of every member variable whose channel is in
    `removed`, after writing the new values of kept weights in `updates`. Config constants are left alone."""
    sources = SourceMasks(analysis, removed, updates)
    for name in sorted(set(sources.masks) | set(sources.updates)):
        variable = view_of(analysis.graph.params[name]).variable
        if variable is None:
            continue
        variable.assign(zeroed(np.asarray(sources.value(name), dtype=variable.dtype), sources.masks.get(name, {})))
    return analysis.source.model
