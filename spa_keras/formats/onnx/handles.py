"""Where a parameter of the ONNX front-end lives in the ModelProto: what ONNX surgery writes its new value to.

Example:

>>> OnnxFolded(3) == OnnxFolded(3)
True
"""

import dataclasses

from spa_keras.analysis.graph import ParamHandle


@dataclasses.dataclass(frozen=True)
class OnnxInitializer(ParamHandle):
    """A graph initializer of that name."""

    name: str


@dataclasses.dataclass(frozen=True)
class OnnxConstant(ParamHandle):
    """The `value` tensor of the Constant node at `node_index`."""

    node_index: int


@dataclasses.dataclass(frozen=True)
class OnnxFolded(ParamHandle):
    """The output of the node at `node_index`, computed from constants (a layout op on a weight); surgery replaces
    the node by an initializer when the value changes."""

    node_index: int
