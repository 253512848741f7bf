"""Conv and ConvTranspose: 2-D convolutions, computed channels-last (NHWC).

    Conv (group 1 or groups)      Conv2D, its bias or the bias of the per-channel `Add` right after it
    Conv (group = in channels)    DepthwiseConv2D (ONNX output channel c*m + j is Keras (c, j))
    ConvTranspose (ungrouped)     Conv2DTranspose with 'valid' padding, then Cropping2D for the pads

Explicit pads become `padding="same"` when they are TF's, else a ZeroPadding2D first. A depthwise convolution with
unequal strides runs at stride 1 and keeps every s-th pixel (a MaxPooling2D of size 1): TF's depthwise kernel takes
equal strides only. Strides and dilations together, convolutions other than 2-D, grouped ConvTranspose and its
`output_shape` raise `ConversionError`.
"""

from __future__ import annotations

from typing import Any

import onnx
from keras import layers

from spa_keras.ops.geometry import same_pads
from spa_keras.bridges.onnx_to_keras.builder import Builder
from spa_keras.bridges.onnx_to_keras.common import NHWC, refuse
from spa_keras.bridges.onnx_to_keras.helpers import explicit_pads, fused_bias, weighted, zero_pad
from spa_keras.bridges.onnx_to_keras.registry import converts


@converts("Conv")
def _conv(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    w = b.const(node, 1, "weight")
    if w.ndim != 4:
        raise refuse(node, f"only 2-D convolutions rebuild (weight of rank {w.ndim})")
    x = b.tensor(node.input[0], NHWC)
    out_ch, _, kh, kw = w.shape
    cin = x.shape[-1]
    strides, dilations = tuple(a.get("strides") or (1, 1)), tuple(a.get("dilations") or (1, 1))
    if max(strides) > 1 and max(dilations) > 1:
        raise refuse(node, "Keras convolutions take strides or dilations, not both")
    group = a.get("group", 1)
    depthwise = group == cin and group > 1
    # TF's depthwise kernel takes equal strides only: stride 1 on the padded input, then keep every s-th pixel
    subsample = strides if depthwise and strides[0] != strides[1] else None
    pads = explicit_pads(node, a, x.shape[1:3], (kh, kw), strides, dilations)
    strides = (1, 1) if subsample else strides
    padding = "valid"
    if pads != ((0, 0), (0, 0)):
        same = tuple(same_pads(n, k, s, d)[0] for n, k, s, d in zip(x.shape[1:3], (kh, kw), strides, dilations))
        padding = "same" if pads == same and not subsample else "valid"
        x = x if padding == "same" else zero_pad(b, node, x, pads)
    bias = b.const(node, 2, "bias")
    extra, output = fused_bias(b, node, out_ch, 4, 1)
    if extra is not None:
        bias = extra if bias is None else bias + extra
    common = dict(strides=strides, padding=padding, dilation_rate=dilations, use_bias=bias is not None,
                  name=b.unique(node.name))
    if depthwise:  # ONNX output channel c*m + j is Keras (c, j)
        mult = out_ch // cin
        layer = layers.DepthwiseConv2D((kh, kw), depth_multiplier=mult, **common)
        kernel = w.reshape(cin, mult, kh, kw).transpose(2, 3, 0, 1)
    else:
        layer = layers.Conv2D(out_ch, (kh, kw), groups=group, **common)
        kernel = w.transpose(2, 3, 1, 0)
    weighted(b, layer, x, [kernel] + ([bias] if bias is not None else []), output, NHWC)
    if subsample:
        pick = layers.MaxPooling2D((1, 1), subsample, name=b.unique(f"{node.name}_stride"))
        b.set(output, pick(b.tensor(output)), NHWC)


@converts("ConvTranspose")
def _conv_transpose(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    w = b.const(node, 1, "weight")
    if w.ndim != 4 or a.get("group", 1) != 1:
        raise refuse(node, "only 2-D, ungrouped transposed convolutions rebuild")
    if a.get("output_shape"):
        raise refuse(node, "output_shape is not supported (give pads)")
    x = b.tensor(node.input[0], NHWC)
    _, out_ch, kh, kw = w.shape
    strides, dilations = tuple(a.get("strides") or (1, 1)), tuple(a.get("dilations") or (1, 1))
    if max(strides) > 1 and max(dilations) > 1:
        raise refuse(node, "Keras transposed convolutions take strides or dilations, not both")
    extra = tuple(a.get("output_padding") or (0, 0))
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):  # output = input * stride
        totals = [s * (n - 1) + e + (k - 1) * d + 1 - n * s
                  for n, s, e, k, d in zip(x.shape[1:3], strides, extra, (kh, kw), dilations)]
        pads = tuple((t // 2, t - t // 2) if auto == "SAME_UPPER" else (t - t // 2, t // 2) for t in totals)
    else:
        pads = explicit_pads(node, a, x.shape[1:3], (kh, kw), strides, dilations)
    bias = b.const(node, 2, "bias")
    layer = layers.Conv2DTranspose(out_ch, (kh, kw), strides=strides, padding="valid", output_padding=extra,
                                   dilation_rate=dilations, use_bias=bias is not None, name=b.unique(node.name))
    y = layer(x)
    layer.set_weights([w.transpose(2, 3, 1, 0)] + ([bias] if bias is not None else []))
    if pads != ((0, 0), (0, 0)):
        y = layers.Cropping2D(pads, name=b.unique(f"{node.name}_crop"))(y)
    b.set(node.output[0], y, NHWC)
