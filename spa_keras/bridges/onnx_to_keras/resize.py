"""Resize and Upsample by integer factors on H and W: `UpSampling2D`, computed channels-last (NHWC).

    mode nearest                          UpSampling2D(interpolation="nearest"), when ONNX's coordinate
                                          transformation and nearest_mode repeat each pixel (checked by
                                          evaluating the node on pixel indices)
    mode linear, half_pixel coordinates   UpSampling2D(interpolation="bilinear"): what tf.image.resize computes

Scales come from the `scales` or `sizes` input (constants, folded shapes included) or, before opset 9, Upsample's
attribute. Non-integer factors, scaling the batch or channels, antialias and other coordinate modes raise
`ConversionError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from keras import layers
from onnx import helper

from spa_keras.bridges.onnx_to_keras.builder import Builder
from spa_keras.bridges.onnx_to_keras.common import BATCH, NHWC, attributes, refuse
from spa_keras.bridges.onnx_to_keras.registry import converts


@converts("Resize", "Upsample")
def _resize(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    """Resize / Upsample by integer factors on H and W: UpSampling2D (nearest, or bilinear with half-pixel
    coordinates, which is what tf.image.resize computes)."""
    source = b.shape(node.input[0])
    if len(source) != 4:
        raise refuse(node, "only 4-D inputs rebuild")
    if node.op_type == "Upsample":
        scales = a.get("scales") if b.opset < 9 else b.const(node, 1, "scales")
    else:
        if a.get("antialias", 0):
            raise refuse(node, "antialias is not supported")
        scales = b.const(node, 1 if b.opset < 11 else 2, "scales")
        sizes = b.const(node, 3, "sizes") if b.opset >= 11 else None
        axes = [i % 4 for i in a.get("axes") or range(4)]
        given = sizes if scales is None or scales.size == 0 else scales
        scales = [1.0] * 4
        for axis, value in zip(axes, [float(v) for v in given]):
            # sizes give the batch as the batch itself (a Shape of it) or, from batch-1 exports, as 1
            scales[axis] = 1.0 if axis == 0 and given is sizes and value in (BATCH, 1) else \
                value / source[axis] if given is sizes else value
    scales = [float(s) for s in scales]
    factors = [int(round(s)) for s in scales[2:]]
    if scales[:2] != [1.0, 1.0] or any(f < 1 or abs(f - s) > 1e-6 for f, s in zip(factors, scales[2:])):
        raise refuse(node, f"only integer scales on H and W rebuild (scales {scales})")
    mode = a.get("mode", "nearest")
    if mode == "nearest":
        if node.op_type == "Resize" and not _nearest_repeats(b, node, source[2:], factors):
            raise refuse(node, "this coordinate_transformation_mode / nearest_mode does not repeat pixels")
        interpolation = "nearest"
    elif mode in ("linear", "bilinear") and node.op_type == "Resize" and \
            a.get("coordinate_transformation_mode", "half_pixel") in ("half_pixel", "pytorch_half_pixel"):
        interpolation = "bilinear"
    else:
        raise refuse(node, f"mode '{mode}' with these coordinates has no UpSampling2D equivalent")
    y = layers.UpSampling2D(tuple(factors), interpolation=interpolation, name=b.unique(node.name))(
        b.tensor(node.input[0], NHWC))
    b.set(node.output[0], y, NHWC)


def _nearest_repeats(b: Builder, node: onnx.NodeProto, size: Sequence[int], factors: list[int]) -> bool:
    """Whether ONNX's nearest resize of this node repeats each pixel: evaluated on pixel indices."""
    from onnx.reference import ReferenceEvaluator

    attrs = {k: v for k, v in attributes(node, b.opset).items()
             if k in ("coordinate_transformation_mode", "nearest_mode", "mode")}
    probe = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)
    index = np.arange(size[0] * size[1], dtype=np.float32).reshape(1, 1, *size)
    scales = np.array([1, 1] + factors, np.float32)
    got = ReferenceEvaluator(probe, opsets={"": max(b.opset, 11)}).run(None, {"x": index, "scales": scales})[0]
    return np.array_equal(got, index.repeat(factors[0], 2).repeat(factors[1], 3))
