"""Pad: constant padding of H and W of a 4-D tensor, computed channels-last (NHWC).

Positive pads become a ZeroPadding2D, negative ones a Cropping2D; a non-zero `constant_value` v pads x - v with zeros
and adds v back (two Rescalings around them). Other modes, the `axes` input and padding of the batch or channel
axes raise `ConversionError`.
"""

from __future__ import annotations

from typing import Any

import onnx
from keras import layers

from spa_keras.bridges.onnx_to_keras.builder import Builder
from spa_keras.bridges.onnx_to_keras.common import NHWC, refuse
from spa_keras.bridges.onnx_to_keras.helpers import chain
from spa_keras.bridges.onnx_to_keras.registry import converts


@converts("Pad")
def _pad(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    if a.get("mode", "constant") != "constant":
        raise refuse(node, f"mode '{a['mode']}' is not supported (constant only)")
    if b.opset < 11:
        pads, value = list(a["pads"]), a.get("value", 0.0)
    else:
        pads = [int(p) for p in b.const(node, 1, "pads")]
        value = b.const(node, 2, "constant_value")
        value = 0.0 if value is None or value.size == 0 else float(value.reshape(()))
        if len(node.input) > 3 and node.input[3]:
            raise refuse(node, "the axes input is not supported")
    rank = len(b.layouts[node.input[0]])
    if rank != 4 or any(pads[i] or pads[i + rank] for i in (0, 1)):
        raise refuse(node, f"only padding H and W of a 4-D tensor rebuilds (pads {pads})")
    hw = ((pads[2], pads[6]), (pads[3], pads[7]))
    grow = tuple(tuple(max(p, 0) for p in pair) for pair in hw)
    shrink = tuple(tuple(max(-p, 0) for p in pair) for pair in hw)
    steps = [("shift", lambda name: layers.Rescaling(1.0, -value, name=name))] if value else []
    if grow != ((0, 0), (0, 0)):
        steps.append(("pad", lambda name: layers.ZeroPadding2D(grow, name=name)))
    if shrink != ((0, 0), (0, 0)):
        steps.append(("crop", lambda name: layers.Cropping2D(shrink, name=name)))
    if value:  # zero padding of x - value, shifted back: constant padding with `value`
        steps.append(("back", lambda name: layers.Rescaling(1.0, value, name=name)))
    x = b.tensor(node.input[0], NHWC)
    b.set(node.output[0], chain(b, node, x, steps) if steps else x, NHWC)
