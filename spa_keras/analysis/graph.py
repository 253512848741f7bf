"""SPAGraph: the standard computational graph every front-end produces and every rule reads.

It speaks ONNX operator semantics: op types, attributes (complete: the front-end fills every default the op schema
of its opset defines), static tensor shapes (batch 1). Parameters are constant tensors (ONNX initializers, Constant
nodes, Keras variables) with a typed `handle` back to where they live, so surgery can write the sliced values there.
The graph's `source` is the format adapter of the model it describes (`spa_keras.formats.Source`): everything
that needs the model itself (surgery, activations, gradients) goes through it. Front-ends build the graph; rules
and the propagation driver only read it.

Example:

>>> graph = SPAGraph(nodes=[Node("relu", "Relu", ["x"], ["y"])], shapes={"x": (1, 4), "y": (1, 4)},
...                  params={}, inputs=["x"], outputs=["y"])
>>> graph.consumers("x")[0].op_type
'Relu'
>>> Param("w", np.zeros((2, 3))).shape
(2, 3)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import numpy as np

Shape = tuple[int, ...]  # a static shape, batch as 1


# ---- parameter handles: where a parameter lives in its source model ------------------------------------------------

class ParamHandle:
    """Base of the handles a front-end gives its parameters (an ONNX initializer, a view of a Keras variable): only
    that front-end's format adapter reads or writes through them; the engine never looks inside."""


# ---- nodes and parameters -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Node:
    """One operator: ONNX op type, input and output tensor names ('' for an absent optional input), attributes."""

    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    domain: str = ""
    index: int = -1  # position in the source model (ONNX node index), for surgery
    layer: str = ""  # the Keras layer it describes ('' for ONNX nodes): the name users know

    @property
    def display_name(self) -> str:
        """The name reports use: the Keras layer, else the node."""
        return self.layer or self.name

    def attr(self, name: str, default: Any = None) -> Any:
        """An attribute's value. Front-ends fill the schema's defaults, so `default` is only for attributes the
        schema gives none (Transpose's `perm`, Split's `split`)."""
        return self.attrs.get(name, default)


@dataclasses.dataclass
class Param:
    """A constant tensor: its value and where it lives."""

    name: str
    value: np.ndarray
    handle: Optional[ParamHandle] = None
    counted: bool = True  # False for a constant that only feeds folded layout ops (its folded copy is counted)

    @property
    def shape(self) -> Shape:
        return tuple(self.value.shape)


# ---- the graph ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SPAGraph:
    nodes: list[Node]
    shapes: Mapping[str, Optional[Shape]]  # tensor name -> static shape (batch as 1) or None when unknown
    params: dict[str, Param]  # tensor name -> Param
    inputs: list[str]
    outputs: list[str]
    source: Any = None  # the format adapter of the model it describes (`spa_keras.formats.Source`)
    opset: int = 17  # the ONNX (default domain) opset whose semantics the nodes follow

    def __post_init__(self) -> None:
        self._producer: dict[str, Node] = {}
        self._consumers: dict[str, list[Node]] = {}
        for node in self.nodes:
            for t in node.outputs:
                self._producer[t] = node
            for t in node.inputs:
                if t:
                    self._consumers.setdefault(t, []).append(node)

    def producer(self, tensor: str) -> Optional[Node]:
        return self._producer.get(tensor)

    def consumers(self, tensor: str) -> list[Node]:
        return self._consumers.get(tensor, [])

    def is_param(self, tensor: str) -> bool:
        return tensor in self.params

    def shape(self, tensor: str) -> Optional[Shape]:
        if tensor in self.params:
            return self.params[tensor].shape
        return self.shapes.get(tensor)

    def value(self, tensor: str) -> Optional[np.ndarray]:
        """The constant value of `tensor`, or None when it is computed at run time."""
        param = self.params.get(tensor)
        return None if param is None else param.value
