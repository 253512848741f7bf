"""ONNX surgery: slice initializers and Constant-node weights, fix attributes and shape constants, validate.

The input ModelProto is copied, never changed. Each parameter axis keeps the positions whose channel stays (new
values of kept weights, when a plan carries them, replace the old ones first); each op's `rewrite` (its spec in
`spa_keras.ops`) fixes what depends on channel counts (depthwise `group`, Split sizes, Slice bounds,
Reshape/Expand/Resize targets). Stale `value_info` is dropped; the result passes onnx.checker and loads in
onnxruntime before it is returned.

Example:

>>> slim = prune_onnx(analysis, removed)      # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import onnx
from onnx import helper, numpy_helper

from spa_keras.common.errors import ConversionError, InputError, first_line
from spa_keras.formats.onnx.handles import OnnxConstant, OnnxFolded, OnnxInitializer
from spa_keras.formats.masking import sliced, zeroed
from spa_keras.ops import spec_for
from spa_keras.common.tensors import TensorSpec, random_batch

if TYPE_CHECKING:
    from spa_keras.analysis.graph import Node, Shape, SPAGraph
    from spa_keras.analysis.groups import Analysis
    from spa_keras.formats.onnx.source import OnnxSource


class OnnxSurgery:
    def __init__(self, analysis: Analysis, removed: np.ndarray, updates: dict[str, np.ndarray] | None = None) -> None:
        self.analysis = analysis
        self.graph = analysis.graph
        self.ctx = analysis.state
        self.removed = removed
        self.updates = updates or {}
        self.new_shapes = analysis.cost.shapes(removed)
        self.model = onnx.ModelProto()
        self.model.CopyFrom(cast("OnnxSource", analysis.source).proto)
        self._inits = {i.name: i for i in self.model.graph.initializer}
        self._uses: dict[str, int] = {}
        for node in self.model.graph.node:
            for t in node.input:
                self._uses[t] = self._uses.get(t, 0) + 1
        self._fresh = 0
        self._dropped: set[int] = set()  # indices of nodes folded into constants
        # initializers a node stopped reading (it reads a new one): dead unless read elsewhere
        self._released: set[str] = set()

    # ---- shapes ----------------------------------------------------------------------------------------------
    def old_shape(self, tensor: str) -> Shape | None:
        return self.graph.shape(tensor)

    def new_shape(self, tensor: str) -> Shape | None:
        return self.new_shapes.get(tensor) or self.graph.shape(tensor)

    def kept_positions(self, tensor: str, axis: int) -> np.ndarray | None:
        """Bool mask of the positions of `tensor`'s `axis` that stay, or None when the axis is not labelled."""
        labels = self.ctx.labels.get(tensor, {}).get(axis)
        if labels is None:
            binding = self.ctx.bindings.get((tensor, axis))
            labels = None if binding is None else binding.labels
        return None if labels is None else self.analysis.keep_mask(labels, self.removed)

    # ---- edits -----------------------------------------------------------------------------------------------
    def set_attr(self, proto: Any, name: str, value: Any) -> None:
        for a in proto.attribute:
            if a.name == name:
                proto.attribute.remove(a)
                break
        proto.attribute.append(helper.make_attribute(name, value))

    def _write_param(self, name: str, value: np.ndarray) -> None:
        handle = self.graph.params[name].handle
        tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
        if isinstance(handle, OnnxFolded) and self._write_cast_source(name, handle, value):
            return
        if isinstance(handle, OnnxFolded):  # the layout op on constants becomes the constant it computes
            self._dropped.add(handle.node_index)
            self._add_initializer(tensor)
        elif isinstance(handle, OnnxInitializer):
            self._inits[name].CopyFrom(tensor)
            for inp in self.model.graph.input:  # old-style models also list weights as graph inputs
                if inp.name == name:
                    inp.CopyFrom(helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
        elif isinstance(handle, OnnxConstant):
            for a in self.model.graph.node[handle.node_index].attribute:
                if a.name == "value":
                    a.t.CopyFrom(tensor)
        else:
            raise ConversionError(f"ONNX surgery cannot write parameter {name} (a {type(handle).__name__})")

    def _write_cast_source(self, name: str, handle: OnnxFolded, value: np.ndarray) -> bool:
        """A weight stored in another dtype and read through Cast (int8, float16) keeps its dtype: the Cast stays
        and reads a sliced copy of the stored values. Integers that new values (a reconstruction) made fractional
        cannot be stored: refused."""
        proto = self.model.graph.node[handle.node_index]
        source = self.graph.params.get(proto.input[0]) if proto.op_type == "Cast" else None
        if source is None or source.value.dtype == value.dtype:
            return False
        stored = value.astype(source.value.dtype)
        if source.value.dtype.kind in "iub" and not np.array_equal(stored.astype(value.dtype), value):
            raise InputError(f"weight {name} is stored as {source.value.dtype} and read through Cast "
                             f"({proto.name or 'unnamed'}); its new values are not whole numbers, so they cannot be "
                             "stored that way: prune without reconstruction, or prune the float model")
        self._fresh += 1
        fresh = f"{proto.input[0]}_spa{self._fresh}"
        self._add_initializer(numpy_helper.from_array(np.ascontiguousarray(stored), fresh))
        self._released.add(proto.input[0])
        proto.input[0] = fresh
        return True

    def _add_initializer(self, tensor: Any) -> None:
        self.model.graph.initializer.append(tensor)
        self._inits[tensor.name] = self.model.graph.initializer[-1]
        if self.model.ir_version < 4:  # IR 3 wants every initializer listed as a graph input
            self.model.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                                        list(tensor.dims)))

    def set_input_constant(self, node: Node, slot: int, value: np.ndarray) -> None:
        """Give input `slot` of `node` the constant `value` (a private copy when other nodes share it)."""
        name = node.inputs[slot]
        proto = self.model.graph.node[node.index]
        if name in self.graph.params and self._uses.get(name, 0) <= 1:
            self._write_param(name, value)
            return
        self._fresh += 1
        fresh = f"{name or node.name}_spa{self._fresh}"
        self._add_initializer(numpy_helper.from_array(np.asarray(value), fresh))
        proto.input[slot] = fresh

    def add_input_constant(self, node: Node, value: np.ndarray) -> None:
        proto = self.model.graph.node[node.index]
        self._fresh += 1
        fresh = f"{node.name}_split_spa{self._fresh}"
        self._add_initializer(numpy_helper.from_array(np.asarray(value), fresh))
        proto.input.append(fresh)
        for a in list(proto.attribute):
            if a.name == "num_outputs":
                proto.attribute.remove(a)

    def rewrite_shape_input(self, node: Node, slot: int) -> None:
        """Rewrite a shape operand (Reshape target, Expand shape, Resize sizes) for the output's new shape."""
        out = node.outputs[0]
        old, new = self.old_shape(out), self.new_shape(out)
        if old == new:
            return
        assert old is not None and new is not None  # a Reshape, Expand or Resize whose output shape is known
        changed = [a for a in range(len(old)) if old[a] != new[a]]
        target = self.graph.value(node.inputs[slot])
        if target is not None:
            target = target.copy()
            for a in changed:
                if target[a] not in (0, -1):
                    target[a] = new[a]
            self.set_input_constant(node, slot, target)
            return
        # a shape computed at run time: Concat of pieces, some of them constants naming channel counts
        producer = self.graph.producer(node.inputs[slot])
        while producer is not None and producer.op_type in ("Cast", "Identity"):  # value-preserving steps
            producer = self.graph.producer(producer.inputs[0])
        if producer is not None and producer.op_type == "Concat":
            offset = 0
            for i, piece in enumerate(producer.inputs):
                size = int(np.prod(self.graph.shape(piece) or (1,)))
                for a in changed:
                    if offset <= a < offset + size:
                        value = self.graph.value(piece)
                        if value is None:
                            break  # computed from Shape: already right at run time
                        value = value.copy().reshape(-1)  # its own dtype: Concat needs them alike
                        if value[a - offset] not in (0, -1):
                            value[a - offset] = new[a]
                            self.set_input_constant(producer, i, value.reshape(self.graph.params[piece].shape))
                offset += size

    def _drop_dead_constants(self) -> None:
        """Remove the folded nodes, then every node and initializer that only fed them (their weights live in the
        new initializers now). ONNX ops have no side effects, so a node nobody reads is dead."""
        graph = self.model.graph
        nodes = [n for i, n in enumerate(graph.node) if i not in self._dropped]
        outputs = {o.name for o in graph.output}
        used_before = {t for n in graph.node for t in n.input} | self._released
        while True:
            used = {t for n in nodes for t in n.input} | outputs
            alive = [n for n in nodes if any(o in used for o in n.output)]
            if len(alive) == len(nodes):
                break
            nodes = alive
        del graph.node[:]
        graph.node.extend(nodes)
        dead = {i.name for i in graph.initializer} & (used_before - used)  # data inputs stay: the interface is fixed
        for init in [i for i in graph.initializer if i.name in dead]:
            graph.initializer.remove(init)
        for inp in [i for i in graph.input if i.name in dead]:
            graph.input.remove(inp)

    # ---- the whole job -------------------------------------------------------------------------------------
    def _write_values(self, cut: bool) -> None:
        """Write every parameter that changes: the plan's new value (if any) with the removed positions cut out
        (`cut`) or zeroed."""
        masks = self.analysis.param_masks(self.removed)
        for param in sorted(set(masks) | set(self.updates)):
            value = self.updates.get(param, self.graph.params[param].value)
            value = (sliced if cut else zeroed)(value, masks.get(param, {}))
            self._write_param(param, value.astype(self.graph.params[param].value.dtype, copy=False))

    def masked(self) -> Any:
        """The model with the removed channels zeroed in every member (shapes unchanged) and the new values
        written: what the slim model computes, in the original's shapes."""
        self._write_values(cut=False)
        if self._dropped or self._released:
            self._drop_dead_constants()
        return self.model

    def apply(self) -> Any:
        self._write_values(cut=True)
        for node in self.graph.nodes:
            spec = spec_for(node.op_type)
            rewrite = None if spec is None else spec.rewrite
            if rewrite is not None and node.index >= 0 and self.old_shape(node.inputs[0]) is not None:
                rewrite(self, node, self.model.graph.node[node.index])
        if self._dropped or self._released:
            self._drop_dead_constants()
        del self.model.graph.value_info[:]
        return self.model


def mask_onnx(analysis: Analysis, removed: np.ndarray, updates: dict[str, np.ndarray] | None = None) -> Any:
    """A copy of the analysed ONNX model with the `removed` channels zeroed in every member parameter and the new
    values of kept weights in `updates` written; shapes unchanged (not validated: for internal use)."""
    return OnnxSurgery(analysis, removed, updates).masked()


def prune_onnx(analysis: Analysis, removed: np.ndarray, updates: dict[str, np.ndarray] | None = None,
               where: str = "pruned model") -> Any:
    """A pruned copy of the analysed ONNX model without the channels in `removed` (and with the new values of kept
    weights in `updates`, {parameter: full-size array}); checked and run before it is returned."""
    from spa_keras.bridges import onnx_io

    model = OnnxSurgery(analysis, removed, updates).apply()
    try:
        session = onnx_io.check(model, where=where)
    except (ConversionError, InputError) as exc:
        raise ConversionError(f"surgery produced an invalid model ({exc}); please report this with the model") from exc
    feeds = analysis_batch(analysis.graph, onnx_io.input_specs(model))
    try:
        onnx_io.run(session, feeds)  # loading is not enough: shapes fail at run time
    except Exception as exc:
        # not ours when it fails too
        onnx_io.require_runs(cast("OnnxSource", analysis.source).proto, feeds, where="the input model")
        raise ConversionError(f"surgery produced a model onnxruntime cannot run ({first_line(exc)}); please report "
                              "this with the model") from exc
    return model


def analysis_batch(graph: SPAGraph, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """A random batch of one at the shapes the model was analysed at."""
    return random_batch(specs, {s.name: shape for s in specs for shape in [graph.shape(s.name)] if shape}, batch=1)
