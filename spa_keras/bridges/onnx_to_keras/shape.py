"""Ops that move elements without computing: Concat, the reshapes, Transpose and the pass-throughs.

    Concat                           Concatenate over the Keras axis behind ONNX's `axis` (not the batch)
    Flatten, Reshape, Squeeze,       Reshape of the input in ONNX element order (a Permute first, unless only
    Unsqueeze                        size-1 axes are out of place); nothing when the shape does not change
    Transpose                        no layer: the same Keras tensor seen through another layout
    Identity, Dropout, Cast          no layer (Cast to float32 only)

Reshape targets come from constants (folded shapes included: the batch is `BATCH` there); the batch axis must stay
first.

Example:

>>> _shape_text((None, 3, 224, 224))
'(?, 3, 224, 224)'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from keras import layers

from spa_keras.bridges.onnx_to_keras.builder import Builder
from spa_keras.bridges.onnx_to_keras.common import BATCH, identity_layout, refuse
from spa_keras.bridges.onnx_to_keras.helpers import common_layout
from spa_keras.bridges.onnx_to_keras.registry import converts


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


@converts("Concat")
def _concat(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    if any(n in b.consts for n in node.input):
        raise refuse(node, "a constant input next to computed ones has no Keras layer")
    layout = common_layout(b, node, list(node.input))
    axis = a["axis"] % len(layout)
    if axis == 0:
        raise refuse(node, "concatenating along the batch axis is not supported")
    inputs = [b.tensor(n, layout) for n in node.input]
    y = inputs[0] if len(inputs) == 1 else layers.Concatenate(axis=layout.index(axis),
                                                             name=b.unique(node.name))(inputs)
    b.set(node.output[0], y, layout)


def _reshape_to(b: Builder, node: onnx.NodeProto, shape: Sequence[int]) -> None:
    """Reshape the input (in ONNX element order) to `shape` (non-batch dims); the output is in ONNX layout."""
    x = b.ordered(node.input[0])
    shape = tuple(int(d) for d in shape)
    y = x if tuple(x.shape[1:]) == shape and b.layouts[node.input[0]] == identity_layout(len(x.shape)) else \
        layers.Reshape(shape, name=b.unique(node.name))(x)
    b.set(node.output[0], y, identity_layout(len(shape) + 1))


@converts("Flatten")
def _flatten(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    rank = len(b.layouts[node.input[0]])
    if a.get("axis", 1) % rank != 1:
        raise refuse(node, "only Flatten with axis=1 keeps the batch axis")
    size = int(np.prod(b.shape(node.input[0])[1:]))
    _reshape_to(b, node, (size,))


@converts("Reshape")
def _reshape(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    target = [int(d) for d in b.const(node, 1, "shape")]
    source = b.shape(node.input[0])
    copy_zero = not a.get("allowzero", 0)
    if target and (target[0] == BATCH or (target[0] == 0 and copy_zero)):
        rest = target[1:]
    elif target and target[0] == -1 and -1 not in target[1:]:
        rest = target[1:]
    else:
        raise refuse(node, f"the target shape {target} does not keep the batch axis first")
    rest = [source[i + 1] if d == 0 and copy_zero else d for i, d in enumerate(rest)]
    size = int(np.prod(source[1:]))
    if -1 in rest:
        known = int(np.prod([d for d in rest if d != -1]))
        rest[rest.index(-1)] = size // known
    if int(np.prod(rest)) != size:
        raise refuse(node, f"cannot reshape {_shape_text(source)} to {target}")
    _reshape_to(b, node, rest)


def _axes(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> list[int] | None:
    axes = a.get("axes")
    if axes is None and len(node.input) > 1:
        axes = b.const(node, 1, "axes")
    return None if axes is None else [int(i) for i in axes]


@converts("Squeeze")
def _squeeze(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    source = b.shape(node.input[0])
    axes = _axes(b, node, a)
    axes = [i for i in range(1, len(source)) if source[i] == 1] if axes is None else \
        [i % len(source) for i in axes]
    if 0 in axes or any(source[i] != 1 for i in axes):
        raise refuse(node, f"cannot squeeze axes {axes} of {_shape_text(source)}")
    _reshape_to(b, node, [d for i, d in enumerate(source) if i and i not in axes])


@converts("Unsqueeze")
def _unsqueeze(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    shape = list(b.shape(node.input[0]))
    rank = len(shape) + len(_axes(b, node, a))
    axes = sorted(i % rank for i in _axes(b, node, a))
    if 0 in axes:
        raise refuse(node, "a new batch axis is not supported")
    for i in axes:
        shape.insert(i, 1)
    _reshape_to(b, node, shape[1:])


@converts("Transpose")
def _transpose(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    """No layer: the output is the same Keras tensor seen through another layout."""
    layout = b.layouts[node.input[0]]
    perm = list(a.get("perm") or reversed(range(len(layout))))
    if perm[0] != 0:
        raise refuse(node, "moving the batch axis is not supported")
    inverse = np.argsort(perm)
    b.set(node.output[0], b.tensor(node.input[0]), tuple(int(inverse[i]) for i in layout))


@converts("Identity", "Dropout")
def _identity_op(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    b.set(node.output[0], b.tensor(node.input[0]), b.layouts[node.input[0]])


@converts("Cast")
def _cast(b: Builder, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    if a["to"] != onnx.TensorProto.FLOAT:
        raise refuse(node, "only casts to float32 of computed tensors rebuild")
    _identity_op(b, node, a)
