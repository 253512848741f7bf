"""OBSPA's view of a Keras model (`spa_keras.obspa.backend.ActivationBackend`): layer inputs read through sub-models,
a masked clone refit as it runs beside the original (`lockstep.py`), BatchNorm layers to re-estimate and to
optimise data-free inputs for.

Sites are layer names: a consumer's input can be read when it is a top-level Conv2D or Dense called once,
channels last, whose input is reachable from the model's inputs (not inside a nested model) and whose kernel is the
consumer's weight.

Example:

>>> backend = KerasSource(model).activations()              # doctest: +SKIP
>>> [x] = backend.reader(["conv1"])(batch)                  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Hashable, cast

import numpy as np

from spa_keras.compute.distill import NormTarget
from spa_keras.formats.masking import zeroed
from spa_keras.formats.keras.view import view_of
from spa_keras.obspa.backend import NormSite

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Node
    from spa_keras.analysis.groups import Analysis
    from spa_keras.formats.keras.source import KerasSource

READABLE = ("Conv2D", "Dense")


class KerasReader:
    """Inputs of some layers of a model: one sub-model from the model's inputs to those layers' inputs."""

    def __init__(self, model: Any, sites: list[Hashable]) -> None:
        import keras

        self.names = list(dict.fromkeys(sites))
        self.model = keras.Model(model.inputs, [model.get_layer(name).input for name in self.names])
        self.index = [self.names.index(site) for site in sites]

    def __call__(self, batch: Any) -> list:
        out = self.model(batch if isinstance(batch, (list, dict)) else [batch], training=False)
        out = [out] if len(self.names) == 1 else list(out)
        return [out[i] for i in self.index]


class KerasActivations:
    """The `ActivationBackend` of a `KerasSource`."""

    channels_last = True
    one_pass = True
    optimises_inputs = True

    def __init__(self, source: KerasSource) -> None:
        self.source = source
        self.model = source.model

    def site(self, node: Node, weight: str) -> str | None:
        import keras

        view = self.source.graph.params[weight].handle
        layer = getattr(view, "layer", None)
        if layer is None or getattr(view, "variable", None) is not getattr(layer, "kernel", None):
            return None
        if type(layer).__name__ not in READABLE or len(layer._inbound_nodes) != 1:
            return None
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return None
        try:  # reachable from the top-level model's inputs (not inside a nested model)
            keras.Model(self.model.inputs, layer.input)
        except Exception:
            return None
        return layer.name

    def reader(self, sites: list[Hashable]) -> KerasReader:
        return KerasReader(self.model, sites)

    def pruned(self, analysis: Analysis, removed: np.ndarray) -> MaskedKerasNetwork:
        return MaskedKerasNetwork(analysis, removed)

    def norm_sites(self, analysis: Analysis) -> dict[Hashable, NormSite]:
        import keras

        out: dict[Hashable, NormSite] = {}
        for layer in self.model.layers:
            if not isinstance(layer, keras.layers.BatchNormalization):
                continue
            params = (layer.moving_mean.path, layer.moving_variance.path)
            if all(p in analysis.graph.params for p in params):
                out[layer.name] = NormSite(layer.name, *params, int(np.atleast_1d(layer.axis)[0]), layer.epsilon)
        return out

    def norm_probe(self) -> tuple[Callable, list[NormTarget]] | None:
        """A sub-model to the inputs of the top-level BatchNorm layers called once and to the model's class output
        (its first output when that is [batch, classes]), and the BatchNorms' running statistics; None with neither,
        or for a model of several inputs. Without BatchNorm the inputs are optimised for the classes, kept smooth
        images by DeepInversion's image prior (`spa_keras.compute.distill`): on the zoo's conv stack without
        BatchNorm, -30% FLOPs, 75.7% of 76.2% (9.5% with Gaussian inputs, L1 34.8%); on its ConvNeXt (LayerNorm)
        83.5% of 84.2%, and 80.8% at -50% (75.7% without the prior)."""
        import keras

        norms = [layer for layer in self.model.layers
                 if isinstance(layer, keras.layers.BatchNormalization) and len(layer._inbound_nodes) == 1]
        classes = [out for out in self.model.outputs[:1] if len(out.shape) == 2 and (out.shape[-1] or 0) >= 2]
        if not (norms or classes) or len(self.model.inputs) != 1:
            import warnings

            warnings.warn(f"OBSPA: {self.model.name} has no BatchNorm statistics and no class output to optimise "
                          "inputs for, or several inputs: the Hessians are measured on Gaussian noise, which keeps "
                          "trained CNNs at chance; give calibration= data", stacklevel=4)
            return None
        targets = []
        for n in norms:
            axes = [a % len(n.input.shape) for a in np.atleast_1d(n.axis)]
            reduce = tuple(a for a in range(len(n.input.shape)) if a not in axes)
            targets.append(NormTarget(reduce, n.moving_mean.numpy(), n.moving_variance.numpy() + n.epsilon))
        return keras.Model(self.model.inputs, [n.input for n in norms] + classes), targets


class MaskedKerasNetwork:
    """A clone of the analysed model with the removed channels zeroed; `write` assigns refit values to it."""

    def __init__(self, analysis: Analysis, removed: np.ndarray) -> None:
        import keras

        from spa_keras.analysis.groups import analyze_graph

        source = cast("KerasSource", analysis.source)
        self.original = source.model
        self.model = keras.models.clone_model(self.original)
        self.model.set_weights(self.original.get_weights())
        self.twin = analyze_graph(source.like(self.model).graph)
        self.twin.source.mask_in_place(self.twin, removed)
        self.masks = analysis.param_masks(removed)
        self.updates: dict[str, np.ndarray] = {}

    def write(self, param: str, value: np.ndarray) -> None:
        self.updates[param] = value
        view = view_of(self.twin.graph.params[param])
        masked = zeroed(value, self.masks.get(param, {}))
        view.variable.assign(view.unview(masked).astype(view.variable.dtype))

    def reader(self, sites: list[Hashable]) -> KerasReader:
        return KerasReader(self.model, sites)

    def run_alongside(self, batch: Any, hook: Callable[[Hashable, list, list], None]) -> None:
        from spa_keras.formats.keras.lockstep import run_side_by_side

        run_side_by_side(self.original, self.model, batch, lambda op, args, twin_args: hook(op.name, args, twin_args))
