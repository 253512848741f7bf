"""Custom layers of keras.applications: ConvNeXt's LayerScale, InceptionResNetV2's CustomScaleLayer."""

from spa_keras.formats.keras.registry import describes, resizes


@describes("LayerScale")
def layer_scale(b, layer, x, y, xs, ys):
    """x · γ with γ per channel."""
    if tuple(layer.gamma.shape) != (xs[-1],):
        return False
    b.node(layer, "Mul", [x, b.param(layer, layer.gamma)], [y])
    return True


@resizes("LayerScale")
def layer_scale_width(config, layer, weights, out_shape):
    config["projection_dim"] = int(weights[0].shape[0])
    return config


@describes("CustomScaleLayer", single=False)
def custom_scale(b, layer, call):
    """inputs[0] + inputs[1] · scale (a Python number): a residual add."""
    if len(call.inputs) != 2 or len(call.outputs) != 1:
        return False
    b.node(layer, "Add", call.inputs, call.outputs)
    return True
