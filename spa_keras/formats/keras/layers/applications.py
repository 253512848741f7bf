"""Custom layers of keras.applications: ConvNeXt's LayerScale, InceptionResNetV2's CustomScaleLayer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spa_keras.formats.keras.registry import describes, resizes

if TYPE_CHECKING:
    from spa_keras.formats.keras.builder import Call, GraphBuilder
    from spa_keras.formats.keras.registry import Config, Dims, Weights


@describes("LayerScale")
def layer_scale(b: GraphBuilder, layer: Any, x: str, y: str, xs: Dims, ys: Dims) -> bool:
    """x · γ with γ per channel."""
    if tuple(layer.gamma.shape) != (xs[-1],):
        return False
    b.node(layer, "Mul", [x, b.param(layer, layer.gamma)], [y])
    return True


@resizes("LayerScale")
def layer_scale_width(config: Config, layer: Any, weights: Weights, out_shape: Dims | None) -> Config:
    config["projection_dim"] = int(weights[0].shape[0])
    return config


@describes("CustomScaleLayer", single=False)
def custom_scale(b: GraphBuilder, layer: Any, call: Call) -> bool:
    """inputs[0] + inputs[1] · scale (a Python number): a residual add."""
    if len(call.inputs) != 2 or len(call.outputs) != 1:
        return False
    b.node(layer, "Add", call.inputs, call.outputs)
    return True
