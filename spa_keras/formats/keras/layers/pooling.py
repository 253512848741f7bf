"""Pooling and global pooling: channels pass through unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spa_keras.formats.keras.builder import channels_first, is_channels_last
from spa_keras.formats.keras.registry import describes

if TYPE_CHECKING:
    from spa_keras.formats.keras.builder import GraphBuilder
    from spa_keras.formats.keras.registry import Dims

_DIMS = ("1D", "2D", "3D")


@describes(*(f"{kind}Pooling{d}" for kind in ("Max", "Average") for d in _DIMS))
def pool(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    if not is_channels_last(layer):
        return False
    op = "MaxPool" if "Max" in type(layer).__name__ else "AveragePool"
    return channels_first(b, layer, x, y, xs, ys, lambda xf, yf: b.node(layer, op, [xf], [yf]))


@describes(*(f"Global{kind}Pooling{d}" for kind in ("Max", "Average") for d in _DIMS))
def global_pool(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    if not is_channels_last(layer):
        return False
    op = "ReduceMax" if "Max" in type(layer).__name__ else "ReduceMean"
    b.node(layer, op, [x], [y], axes=list(range(1, len(xs) - 1)), keepdims=int(bool(getattr(layer, "keepdims", 0))))
    return True
