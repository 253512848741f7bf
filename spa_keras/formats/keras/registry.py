"""The registry of Keras layer descriptions, keyed by layer class name.

A description adds nodes to the `GraphBuilder` for one call of a layer and returns True, or returns False when this
call is outside what it covers (the layer then becomes a named barrier). A model class used as a layer may register
a hook that runs after the front-end walked into it (`after_model`: to tie widths its config holds once). How a
layer's config is rewritten for its new widths is Keras surgery's table (`spa_keras.formats.keras.resizers`).

Example:

>>> @describes("Identity")                              # doctest: +SKIP
... def identity(b, layer, x, y, xs, ys):
...     b.node(layer, "Identity", [x], [y])
...     return True
"""

import dataclasses


@dataclasses.dataclass
class LayerDescription:
    describe: object = None
    single: bool = True  # one input and one output tensor, both with known shapes: describe(b, layer, x, y, xs, ys)


LAYERS = {}


def describes(*class_names, single=True):
    def wrap(fn):
        for name in class_names:
            LAYERS.setdefault(name, LayerDescription()).describe = fn
            LAYERS[name].single = single
        return fn

    return wrap


MODEL_HOOKS = {}


def after_model(*class_names):
    def wrap(fn):
        for name in class_names:
            MODEL_HOOKS[name] = fn
        return fn

    return wrap
