"""Flatten, Reshape, Permute (the engine traces positions), padding, cropping and upsampling (channels pass)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spa_keras.formats.keras.registry import describes, resizes

if TYPE_CHECKING:
    from spa_keras.formats.keras.builder import GraphBuilder
    from spa_keras.formats.keras.registry import Config, Dims, Weights


@describes(*(f"{kind}{d}" for kind in ("ZeroPadding", "Cropping", "UpSampling") for d in ("1D", "2D", "3D")))
def same_channels(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    """Spatial sizes change, channels pass."""
    b.node(layer, "Pad", [x], [y])
    return True


@describes("Flatten")
def flatten(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    if getattr(layer, "data_format", "channels_last") == "channels_first" and len(xs) > 2:
        return False  # Keras moves channels last before it flattens: an order this description does not trace
    b.node(layer, "Flatten", [x], [y], axis=1)
    return True


@describes("Reshape")
def reshape(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    b.node(layer, "Reshape", [x], [y])
    return True


@describes("Permute")
def permute(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    b.node(layer, "Transpose", [x], [y], perm=[0] + list(layer.dims))
    return True


@resizes("Reshape")
def reshape_target(config: Config, layer: Any, weights: Weights, out_shape: Dims | None) -> Config:
    assert out_shape is not None  # a layer's own output shape (only a model class is given None)
    # only sizes that pruning changed are rewritten: -1 stays inferred (a free length the analysis took as 1)
    config["target_shape"] = tuple(d if d == -1 else int(n) for d, n in zip(layer.target_shape, out_shape[1:]))
    return config
