"""Flatten, Reshape, Permute (the engine traces positions), padding, cropping and upsampling (channels pass)."""

from spa_keras.formats.keras.registry import describes


@describes(*(f"{kind}{d}" for kind in ("ZeroPadding", "Cropping", "UpSampling") for d in ("1D", "2D", "3D")))
def same_channels(b, layer, x, y, xs, ys):
    """Spatial sizes change, channels pass."""
    b.node(layer, "Pad", [x], [y])
    return True


@describes("Flatten")
def flatten(b, layer, x, y, xs, ys):
    if getattr(layer, "data_format", "channels_last") == "channels_first" and len(xs) > 2:
        return False  # Keras moves channels last before it flattens: an order this description does not trace
    b.node(layer, "Flatten", [x], [y], axis=1)
    return True


@describes("Reshape")
def reshape(b, layer, x, y, xs, ys):
    b.node(layer, "Reshape", [x], [y])
    return True


@describes("Permute")
def permute(b, layer, x, y, xs, ys):
    b.node(layer, "Transpose", [x], [y], perm=[0] + list(layer.dims))
    return True
