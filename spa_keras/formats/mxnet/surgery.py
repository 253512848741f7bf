"""MXNet surgery: a plan made on the ONNX analysis of a checkpoint, applied to its symbol and parameters by name.

mxnet.onnx names every initializer after the MXNet parameter it holds (`resnetv10_conv0_weight`) in the same layout,
so the keep masks the engine computes per ONNX parameter slice the MXNet parameters of the same name, and new
values of kept weights (OBSPA) replace them first. The symbol's attributes that count channels follow the new
shapes: `num_filter` (Convolution, Deconvolution), `num_hidden` (FullyConnected), `num_group` (as the ONNX surgery
set `group` on the Conv that reads the same weight) and the `__shape__` of parameter variables. BatchNorm, Concat,
SliceChannel, pooling and activations follow their inputs by themselves; loss heads (SoftmaxOutput, ...) stay. The
slim checkpoint is run with MXNet against the slim ONNX model before it is returned; a symbol that still differs
(a Reshape with channel counts written into it, say) is an error that names the difference.

Example:

>>> slim = prune_mxnet(checkpoint, masks, slim_onnx)     # doctest: +SKIP
>>> mxnet_io.save(slim, "slim")                          # doctest: +SKIP
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from spa_keras.common.errors import ConversionError
from spa_keras.formats.masking import sliced

# op -> (attribute counting output channels, weight axis that holds it, times num_group)
CHANNEL_ATTRS = {"Convolution": ("num_filter", 0, False), "Deconvolution": ("num_filter", 1, True),
                 "FullyConnected": ("num_hidden", 0, False)}
ONNX_OPS = {"Convolution": "Conv", "Deconvolution": "ConvTranspose"}


def prune_mxnet(checkpoint: Any, masks: Mapping[str, Mapping[int, np.ndarray]], slim_onnx: Any,
                updates: Mapping[str, np.ndarray] | None = None) -> Any:
    """The slim `Checkpoint`: parameters sliced by `masks` ({parameter: {axis: keep}}), after `updates`
    ({parameter: full-size new value}); the symbol's channel attributes made to match."""
    from spa_keras.bridges.mxnet_io import Checkpoint

    params = {name: _new_value(name, value.asnumpy(), masks.get(name), (updates or {}).get(name))
              for name, value in checkpoint.params.items()}
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ConversionError(f"{checkpoint.name}: the ONNX export prunes '{unknown[0]}', which is not a parameter "
                              "of the MXNet checkpoint; write .onnx instead of MXNet")
    symbol = _resized_symbol(checkpoint.symbol, params, _onnx_groups(slim_onnx))
    return Checkpoint(symbol, _ndarrays(params), checkpoint.name)


def _new_value(name: str, value: np.ndarray, keep: Mapping[int, np.ndarray] | None,
               update: np.ndarray | None) -> np.ndarray:
    if update is not None:
        update = np.asarray(update, value.dtype)
        if update.shape != value.shape:
            raise ConversionError(f"parameter '{name}': new value of shape {update.shape} for a parameter of shape "
                                  f"{value.shape}")
        value = update
    if keep:
        for axis, mask in keep.items():
            if axis >= value.ndim or value.shape[axis] != len(mask):
                raise ConversionError(f"parameter '{name}' has shape {value.shape} in MXNet but the ONNX export "
                                      f"prunes {len(mask)} positions on its axis {axis}; write .onnx instead")
        value = sliced(value, keep)
    return value


def _onnx_groups(model: Any) -> dict[str, int]:
    """{weight name: `group`} of the slim ONNX model's Conv and ConvTranspose nodes."""
    groups: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            groups[node.input[1]] = group
    return groups


def _resized_symbol(symbol: Any, params: dict[str, np.ndarray], groups: dict[str, int]) -> Any:
    from spa_keras.bridges.mxnet_compat import import_mxnet

    mx = import_mxnet()
    graph = json.loads(symbol.tojson())
    nodes = graph["nodes"]
    for node in nodes:
        attrs = node.setdefault("attrs", {})
        if node["op"] == "null":
            if "__shape__" in attrs and node["name"] in params:
                attrs["__shape__"] = str(tuple(params[node["name"]].shape))
            continue
        if node["op"] not in CHANNEL_ATTRS:
            continue
        weight = nodes[node["inputs"][1][0]]["name"]
        if weight not in params:
            continue
        attr, axis, per_group = CHANNEL_ATTRS[node["op"]]
        if weight in groups and "num_group" in attrs:
            attrs["num_group"] = str(groups[weight])
        count = params[weight].shape[axis] * (int(attrs.get("num_group", 1)) if per_group else 1)
        attrs[attr] = str(count)
    return mx.sym.load_json(json.dumps(graph))


def _ndarrays(params: dict[str, np.ndarray]) -> dict[str, Any]:
    from spa_keras.bridges.mxnet_compat import import_mxnet

    mx = import_mxnet()
    return {name: mx.nd.array(value, dtype=value.dtype) for name, value in params.items()}
