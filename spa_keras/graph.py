"""SPAGraph: the standard computational graph every front-end produces and every rule reads.

It speaks ONNX operator semantics: op types, attributes, static tensor shapes (batch 1). Parameters are constant
tensors (ONNX initializers, Constant nodes, Keras variables) with a `handle` back to where they live, so surgery
can write the sliced values there. Front-ends build it; rules and the propagation driver only read it.

Example:

>>> graph = SPAGraph(nodes=[Node("relu", "Relu", ["x"], ["y"])], shapes={"x": (1, 4), "y": (1, 4)},
...                  params={}, inputs=["x"], outputs=["y"])
>>> graph.consumers("x")[0].op_type
'Relu'
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Node:
    """One operator: ONNX op type, input and output tensor names ('' for an absent optional input), attributes."""

    name: str
    op_type: str
    inputs: list
    outputs: list
    attrs: dict = dataclasses.field(default_factory=dict)
    domain: str = ""
    index: int = -1  # position in the source model (ONNX node index), for surgery

    def attr(self, name, default=None):
        return self.attrs.get(name, default)


@dataclasses.dataclass
class Param:
    """A constant tensor: its value and where it lives (an initializer name, a Constant node, a Keras variable)."""

    name: str
    value: np.ndarray
    handle: object = None
    counted: bool = True  # False for a constant that only feeds folded layout ops (its folded copy is counted)

    @property
    def shape(self):
        return tuple(self.value.shape)


@dataclasses.dataclass
class SPAGraph:
    nodes: list
    shapes: dict  # tensor name -> static shape (batch as 1) or None when unknown
    params: dict  # tensor name -> Param
    inputs: list
    outputs: list
    source: object = None  # the model it was built from (surgery needs it)
    layout: str = "NCHW"  # where the front-end knows it: NCHW (ONNX convention) or NHWC (Keras)

    def __post_init__(self):
        self._producer = {}
        self._consumers = {}
        for node in self.nodes:
            for t in node.outputs:
                self._producer[t] = node
            for t in node.inputs:
                if t:
                    self._consumers.setdefault(t, []).append(node)

    def producer(self, tensor):
        return self._producer.get(tensor)

    def consumers(self, tensor):
        return self._consumers.get(tensor, [])

    def is_param(self, tensor):
        return tensor in self.params

    def shape(self, tensor):
        if tensor in self.params:
            return self.params[tensor].shape
        return self.shapes.get(tensor)

    def value(self, tensor):
        """The constant value of `tensor`, or None when it is computed at run time."""
        param = self.params.get(tensor)
        return None if param is None else param.value
