"""The conversion loop: `Builder` walks the ONNX graph once and calls each node's converter.

It holds what converters read and write: the folded constants, the Keras tensor of each computed ONNX tensor in
every layout asked for so far (`Builder.tensor` adds a Permute the first time), the layout each was computed in
(`Layouts`), unique layer names, and who produces and consumes each tensor (for fusing a following Add as a bias).
Constants are folded with onnx's reference evaluator, first all at once, then as Shape of a computed tensor makes
more of them constant.

Example (what `onnx_to_keras` does, once the op modules have filled the registry):

>>> Builder(onnx.load("resnet18.onnx"), {}).build("resnet18")      # doctest: +SKIP
<Functional name=resnet18, built=True>
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import keras
import numpy as np
import onnx
from keras import layers
from onnx import numpy_helper

from spa_keras.bridges import onnx_io
from spa_keras.bridges.onnx_to_keras.common import (BATCH, FALLBACK, NHWC, Layout, attributes, identity_layout,
                                                    named, where)
from spa_keras.bridges.onnx_to_keras.registry import CONVERTERS
from spa_keras.common.errors import ConversionError, InputError, first_line
from spa_keras.common.tensors import TensorSpec, concrete_shape


class Builder:
    """Walks the (topologically sorted) graph once; holds constants, Keras tensors and their layouts.

    Args:
        model: the ONNX model to rebuild.
        input_shapes: `{input name or None: shape with batch}` filling free non-batch input dimensions.
    """

    def __init__(self, model: onnx.ModelProto, input_shapes: Mapping[str | None, Sequence[int]]) -> None:
        self.model = model
        self.input_shapes = input_shapes
        self.opsets = {o.domain or "": o.version for o in model.opset_import}
        self.opset = self.opsets.get("", self.opsets.get("ai.onnx", 1))
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.tensors = {}  # ONNX name -> {layout: Keras tensor}
        self.layouts = Layouts()  # ONNX name -> the layout it was computed in
        self.producers = {o: n for n in model.graph.node for o in n.output}
        self.consumers = {}
        for node in model.graph.node:
            for i in node.input:
                self.consumers.setdefault(i, []).append(node)
        self.outputs = {o.name for o in model.graph.output}
        self.used_names = set()

    def build(self, name: str) -> keras.Model:
        """Convert every node and return the functional model, inputs and outputs in ONNX's shapes.

        Args:
            name: the Keras model's name.
        """
        inputs = [self._input(spec) for spec in onnx_io.input_specs(self.model)]
        self._fold_constants()  # first, so a bias computed after its Conv (Reshape of a Constant) can be fused
        for index, node in enumerate(self.model.graph.node):
            if all(o in self.consts or o in self.tensors for o in node.output if o):
                continue  # folded, or produced by a fused neighbour
            if self._fold_shape(node):
                continue
            self._convert(node, index)
        outputs = []
        for out in self.model.graph.output:
            if out.name not in self.tensors:
                raise ConversionError(f"graph output '{out.name}' is a constant; a Keras model cannot output one")
            outputs.append(self.tensor(out.name, identity_layout(len(self.layouts[out.name]))))
        return keras.Model(inputs, outputs, name=name)

    def _input(self, spec: TensorSpec) -> keras.KerasTensor:
        shape = concrete_shape(spec, self.input_shapes, batch=1)[1:]  # InputError names a free dimension
        if spec.dtype != "float32":
            raise ConversionError(f"input '{spec.name}' is {spec.dtype}; only float32 inputs rebuild in Keras")
        tensor = keras.Input(tuple(int(d) for d in shape), name=self.unique(spec.name))
        self.set(spec.name, tensor, identity_layout(len(shape) + 1))
        return tensor

    def _fold_constants(self) -> None:
        for node in self.model.graph.node:
            if all(i in self.consts for i in node.input if i):
                self.fold(node)

    def _fold_shape(self, node: onnx.NodeProto) -> bool:
        """Shape of a computed tensor (its batch is `BATCH`), and nodes whose inputs became constant that way."""
        if node.op_type == "Shape" and node.input[0] in self.tensors:
            a = attributes(node, self.opset)
            shape = [BATCH if d is None else d for d in self.shape(node.input[0])]
            self.consts[node.output[0]] = np.array(shape, np.int64)[a.get("start", 0):a.get("end")]
            return True
        if all(i in self.consts for i in node.input if i):
            self.fold(node)
            return True
        return False

    def fold(self, node: onnx.NodeProto) -> None:
        """Evaluate a node on constant inputs (onnx's reference evaluator); its outputs become constants.

        Args:
            node: a node whose inputs are all in `consts`.
        """
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            self.consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            return
        from onnx.reference import ReferenceEvaluator

        feeds = {i: self.consts[i] for i in node.input if i}
        try:
            values = ReferenceEvaluator(node, opsets=self.opsets).run(None, feeds)
        except Exception as exc:
            raise ConversionError(f"{where(node)}: cannot evaluate it on its constant inputs "
                                  f"({first_line(exc)}); {FALLBACK}") from exc
        self.consts.update({o: np.asarray(v) for o, v in zip(node.output, values) if o})

    def _convert(self, node: onnx.NodeProto, index: int) -> None:
        converter = CONVERTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if converter is None:
            raise ConversionError(f"{where(node)}: no Keras layer for this op; {FALLBACK}")
        if not node.name:
            node = named(node, f"{node.op_type.lower()}_{index}")
        try:
            converter(self, node, attributes(node, self.opset))
        except (ConversionError, InputError):
            raise
        except Exception as exc:  # a Keras layer refusing shapes the ONNX graph allows
            raise ConversionError(f"{where(node)}: {first_line(exc)}; {FALLBACK}") from exc

    # --------------------------------------------------------------------------- what converters call

    def set(self, name: str, tensor: keras.KerasTensor, layout: Iterable[int]) -> None:
        """Register `tensor` as ONNX tensor `name`, computed in `layout`.

        Args:
            name: the ONNX tensor name.
            tensor: its Keras tensor.
            layout: the ONNX axis behind each Keras axis of `tensor`.
        """
        self.tensors[name] = {tuple(layout): tensor}
        self.layouts[name] = tuple(layout)

    def tensor(self, name: str, layout: Iterable[int] | None = None) -> keras.KerasTensor:
        """The Keras tensor of ONNX tensor `name`, in `layout` (a Permute the first time another is asked for).

        Args:
            name: the ONNX tensor name.
            layout: the layout wanted; None: the one it was computed in.
        """
        have = self.layouts[name]
        layout = have if layout is None else tuple(layout)
        if layout not in self.tensors[name]:
            dims = tuple(have.index(axis) for axis in layout[1:])
            tag = "nhwc" if layout == NHWC else "nchw" if layout == identity_layout(4) else "perm"
            permute = layers.Permute(dims, name=self.unique(f"{name}_{tag}"))
            self.tensors[name][layout] = permute(self.tensors[name][have])
        return self.tensors[name][layout]

    def ordered(self, name: str) -> keras.KerasTensor:
        """A Keras tensor of `name` whose row-major element order is ONNX's (for Flatten and Reshape).

        Args:
            name: the ONNX tensor name.
        """
        layout = self.layouts[name]
        native = self.tensors[name][layout]
        moved = [axis for axis, size in zip(layout, native.shape) if size != 1]
        return native if moved == sorted(moved) else self.tensor(name, identity_layout(len(layout)))

    def shape(self, name: str) -> tuple[int | None, ...]:
        """The ONNX shape of a computed tensor (batch None).

        Args:
            name: the ONNX tensor name (a constant gives its array's shape).
        """
        if name in self.consts:
            return tuple(self.consts[name].shape)
        layout, shape = self.layouts[name], [None] * len(self.layouts[name])
        for keras_axis, axis in enumerate(layout):
            shape[axis] = self.tensors[name][layout].shape[keras_axis]
        return tuple(shape)

    def const(self, node: onnx.NodeProto, index: int, what: str = "input") -> np.ndarray | None:
        """Input `index` of `node` as a constant array (None when absent); `ConversionError` when it is computed.

        Args:
            node: the node being converted.
            index: the input's position.
            what: how the error names the input ("weight", "scales", ...).
        """
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.consts:
            raise ConversionError(f"{where(node)}: its {what} '{name}' is computed, not constant; {FALLBACK}")
        return self.consts[name]

    def unique(self, text: str) -> str:
        """A Keras layer name from an ONNX name: characters TF scopes accept, unique within the model.

        Args:
            text: the ONNX name (node or tensor), possibly with a suffix.
        """
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "layer"
        base = base if base[0].isalpha() else "n" + base
        name, n = base, 1
        while name in self.used_names:
            name, n = f"{base}_{n}", n + 1
        self.used_names.add(name)
        return name

    def sole_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The one node reading `name` when it is an `op_type` and `name` is not a graph output, else None.

        Args:
            name: the ONNX tensor name.
            op_type: the op type the consumer must have.
        """
        users = self.consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == op_type and name not in self.outputs:
            return users[0]
        return None


class Layouts(dict):
    """Layouts by tensor name; a name without one is a constant (or unknown) where a layer needs a tensor, which
    the converter's error handler reports with the node."""

    def __missing__(self, name: str) -> Layout:
        raise ValueError(f"input '{name}' is a constant or unknown where a computed tensor is needed")
