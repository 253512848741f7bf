"""How a parameter of the engine's graph relates to what Keras stores.

The engine sees parameters in ONNX layout (a Conv2D kernel [kh, kw, C, M] as [M, C, kh, kw], a depthwise kernel
[kh, kw, C, m] as [C·m, 1, kh, kw], an attention projection [D, heads, key_dim] as [D, heads·key_dim]). A
`KerasView` is that mapping, `view = source.transpose(perm).reshape(shape)`, and its inverse for masks: which
positions of which axis of the Keras variable (or config constant) to keep.

Example:

>>> view = KerasView(layer=None, source_shape=(3, 3, 8, 2), perm=(2, 3, 0, 1), shape=(16, 1, 3, 3))
>>> keep = np.repeat([True, False] * 4, 2)        # view axis 0: channel c·2 + j, whole input channels kept
>>> view.variable_masks({0: keep})[2].tolist()
[True, False, True, False, True, False, True, False]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, cast

import numpy as np

from spa_keras.analysis.graph import Param, ParamHandle


@dataclasses.dataclass(eq=False)
class KerasView(ParamHandle):
    """The handle of a Keras-front-end parameter: a view of a layer's variable or config constant."""

    format = "keras"
    layer: Any
    variable: Any = None  # a keras Variable; None for a constant read from the layer's config
    perm: tuple[int, ...] | None = None
    shape: tuple[int, ...] | None = None  # the view's shape when it reshapes the transposed source
    config_key: str | None = None  # for config constants (per-channel Rescaling scale/offset, Normalization mean)
    source_shape: tuple[int, ...] | None = None
    attribute: str | None = None  # where the layer keeps a config constant, when not under its config key

    def __post_init__(self) -> None:
        if self.source_shape is None:
            self.source_shape = tuple(self.variable.shape)
        permuted = self.permuted_shape
        if self.shape is not None and math.prod(self.shape) != math.prod(permuted):
            raise ValueError(f"view {self.shape} does not match {permuted}")

    @property
    def permuted_shape(self) -> tuple[int, ...]:
        s = self.source_shape
        assert s is not None  # set by __post_init__
        return tuple(s) if self.perm is None else tuple(s[p] for p in self.perm)

    @property
    def view_shape(self) -> tuple[int, ...]:
        return self.permuted_shape if self.shape is None else tuple(self.shape)

    def read(self) -> np.ndarray:
        """The source value as numpy, in the source's own layout."""
        if self.variable is not None:
            return np.asarray(self.variable.numpy())
        value = getattr(self.layer, cast(str, self.attribute or self.config_key))  # a config constant has a key
        assert self.source_shape is not None  # set by __post_init__
        return np.broadcast_to(np.asarray(value, np.float32), self.source_shape)

    def view(self, value: np.ndarray) -> np.ndarray:
        value = value if self.perm is None else value.transpose(self.perm)
        return value if self.shape is None else value.reshape(self.shape)

    def unview(self, value: Any) -> np.ndarray:
        """The inverse of `view`: a value in the view's layout (full size) back in the source's layout."""
        value = np.asarray(value).reshape(self.permuted_shape)
        return value if self.perm is None else value.transpose(np.argsort(self.perm))

    def variable_masks(self, view_masks: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
        """{source axis: keep mask} from {view axis: keep mask}.

        A view axis that merges source axes (heads·key_dim, channel·multiplier) must keep a product set: whole
        heads, or the same dims in every head; anything else cannot be written back to the layer.
        """
        permuted = self.permuted_shape
        groups = _merged_axes(permuted, self.view_shape)
        out: dict[int, np.ndarray] = {}
        for axis, keep in view_masks.items():
            group = groups[axis]
            sizes = [permuted[a] for a in group]
            grid = np.asarray(keep, bool).reshape(sizes) if sizes else np.asarray(keep, bool).reshape(())
            rebuilt = np.ones(grid.shape, bool)
            for k, a in enumerate(group):
                other = tuple(j for j in range(len(group)) if j != k)
                keep_a = grid.any(axis=other) if other else grid
                shape = [1] * len(group)
                shape[k] = -1
                rebuilt &= keep_a.reshape(shape)
                if permuted[a] > 1:
                    out[a if self.perm is None else self.perm[a]] = keep_a
            if not np.array_equal(rebuilt, grid):
                name = getattr(self.variable, "path", self.config_key)
                raise ValueError(f"{name}: the channels removed along view axis {axis} do not split into whole "
                                 f"positions of its Keras axes {sizes}")
        return out


def view_of(param: Param) -> KerasView:
    """The handle of a parameter of a Keras model's graph: always a `KerasView` (the front-end makes them)."""
    return cast(KerasView, param.handle)


def _merged_axes(src: tuple[int, ...], dst: tuple[int, ...]) -> list[list[int]]:
    """For each axis of `dst`, the axes of `src` it merges (a reshape that only merges neighbours)."""
    groups: list[list[int]] = []
    i = 0
    for d in dst:
        group: list[int] = []
        size = 1
        if d == 1:
            if i < len(src) and src[i] == 1:
                group, i = [i], i + 1
        else:
            while size < d and i < len(src):
                group.append(i)
                size *= src[i]
                i += 1
            if size != d:
                raise ValueError(f"view {tuple(dst)} is not a merge of {tuple(src)}")
        groups.append(group)
    return groups
