"""What every module of the package shares: the layout constants, a node's attributes, the error texts.

    Layout            the ONNX axis behind each Keras axis of a tensor (a tuple of ints)
    NHWC              the layout of a 4-D tensor computed channels-last
    BATCH             the free batch size inside folded shapes (Shape → Slice → Concat → Reshape)
    attributes        a node's attributes over its schema's defaults
    where, refuse     how errors name a node; the `ConversionError` for what no Keras layer reproduces

Example:

>>> identity_layout(4)
(0, 1, 2, 3)
>>> where(helper.make_node("Relu", ["x"], ["y"], name="relu1"))
"ONNX op Relu (node 'relu1')"
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import helper

from spa_keras.common.errors import ConversionError

Layout = tuple[int, ...]  # the ONNX axis behind each Keras axis

NHWC = (0, 2, 3, 1)  # the Keras axes of a 4-D tensor computed channels-last, as ONNX axes
BATCH = 2**31 - 1  # the free batch size inside folded shapes (Shape → Slice → Concat → Reshape)
FALLBACK = "convert to .tflite or a SavedModel instead (onnx2tf)"


def attributes(node: onnx.NodeProto, opset: int) -> dict[str, Any]:
    """The node's attributes over its schema's defaults (strings decoded), as onnx's reference evaluator reads
    them.

    Args:
        node: the ONNX node.
        opset: the default domain's opset version, which picks the schema.

    >>> sorted(attributes(helper.make_node("HardSigmoid", ["x"], ["y"]), 13).items())
    [('alpha', 0.2...), ('beta', 0.5)]
    """
    schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    values = {name: helper.get_attribute_value(a.default_value) for name, a in schema.attributes.items()
              if a.default_value.type != onnx.AttributeProto.UNDEFINED}
    values.update({a.name: helper.get_attribute_value(a) for a in node.attribute})
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def identity_layout(rank: int) -> Layout:
    """The layout of a tensor in ONNX's own axis order.

    Args:
        rank: the tensor's rank, batch included.
    """
    return tuple(range(rank))


def named(node: onnx.NodeProto, name: str) -> onnx.NodeProto:
    """A copy of `node` named `name` (for nodes the exporter left unnamed).

    Args:
        node: the ONNX node.
        name: its new name.
    """
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = name
    return copy


def where(node: onnx.NodeProto) -> str:
    """How errors name a node: its op type and name.

    Args:
        node: the ONNX node.
    """
    return f"ONNX op {node.op_type} (node '{node.name or '?'}')"


def refuse(node: onnx.NodeProto, why: str) -> ConversionError:
    """The `ConversionError` a converter raises for what no Keras layer reproduces, with the fallback route.

    Args:
        node: the node being converted.
        why: what about it has no Keras equivalent.
    """
    return ConversionError(f"{where(node)}: {why}; {FALLBACK}")
