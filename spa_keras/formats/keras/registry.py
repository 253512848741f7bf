"""The registry of what the Keras adapter knows about each layer class: its `LayerSpec`, filled by the layer family
modules (`layers/*.py`), one decorator per part.

- `@describes(...)`: a description adds nodes to the `GraphBuilder` for one call of a layer and returns True, or
  returns False when this call is outside what it covers (the layer then becomes a named barrier).
- `@resizes(...)`: `resize(config, layer, weights, out_shape)` returns the config of the slim layer (filters, units,
  heads, groups, target shapes) given its sliced weights (in `layer.weights` order) and new output shape; a model
  class rebuilt from its own config (keras-hub backbones, which keep their class) has one too. Layers without one
  keep their config.
- `@counts(...)`: `macs(layer, xs, ys)` for `spa.count` (input and output shapes of one call; lists of shapes for
  layers described with `single=False`).
- `@after_model(...)`: a hook a model class used as a layer runs after the front-end walked into it (to tie widths
  its config holds once).

Example:

>>> @resizes("MyDense")
... def my_dense(config, layer, weights, out_shape):
...     return {**config, "units": int(weights[0].shape[-1])}
>>> LAYERS["MyDense"].resize is my_dense
True
>>> del LAYERS["MyDense"]
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, TypeVar

if TYPE_CHECKING:
    import numpy as np

Dims = Sequence[int]  # a shape as descriptions get it: batch 1, every dimension known
KerasShape = Sequence[Optional[int]]  # a Keras shape as `@counts` get it: batch and free dimensions None
Config = dict[str, Any]  # a layer's config
Weights = list["np.ndarray"]  # a layer's weights, in `layer.weights` order
F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass
class LayerSpec:
    describe: Optional[Callable[..., bool]] = None
    single: bool = True  # one input and one output tensor, both with known shapes: describe(b, layer, x, y, xs, ys)
    resize: Optional[Callable[..., dict]] = None
    macs: Optional[Callable[..., int]] = None


LAYERS: dict[str, LayerSpec] = {}
MODEL_HOOKS: dict[str, Callable[..., None]] = {}


def _spec(name: str) -> LayerSpec:
    return LAYERS.setdefault(name, LayerSpec())


def _filling(class_names: tuple[str, ...], **fields: Any) -> Callable[[F], F]:
    """A decorator that sets `fields` (the decorated function where a field's value is None) on every class's
    spec."""

    def wrap(fn: F) -> F:
        for name in class_names:
            for field, value in fields.items():
                setattr(_spec(name), field, fn if value is None else value)
        return fn

    return wrap


def describes(*class_names: str, single: bool = True) -> Callable[[F], F]:
    return _filling(class_names, describe=None, single=single)


def resizes(*class_names: str) -> Callable[[F], F]:
    return _filling(class_names, resize=None)


def counts(*class_names: str) -> Callable[[F], F]:
    return _filling(class_names, macs=None)


def after_model(*class_names: str) -> Callable[[F], F]:
    def wrap(fn: F) -> F:
        MODEL_HOOKS.update(dict.fromkeys(class_names, fn))
        return fn

    return wrap


def spec_of(layer: Any) -> LayerSpec | None:
    """The spec of a layer's class (`spa_keras.formats.keras.layers` imports every family module, which fills the
    registry)."""
    return LAYERS.get(type(layer).__name__)


def elements(shape: KerasShape) -> int:
    """Elements of one sample of a Keras shape (batch left out; free dimensions count as 1, as in the engine)."""
    out = 1
    for d in shape[1:]:
        out *= d or 1
    return int(out)
