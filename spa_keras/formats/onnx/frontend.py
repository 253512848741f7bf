"""ONNX front-end: `onnx.ModelProto` → `SPAGraph`.

Initializers and Constant nodes become parameters (their handle says which, for surgery). Static shapes come from
ONNX shape inference with every free input dimension set to 1, run on a copy without weight data (fast on large
models). Constant-foldable shape arithmetic is not evaluated here; rules treat unknown shapes as barriers.

Example:

>>> graph = from_onnx(onnx.load("model.onnx"))      # doctest: +SKIP
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from spa_keras.analysis.graph import Node, Param, Shape, SPAGraph
from spa_keras.common.tensors import InputShapes
from spa_keras.formats.onnx.handles import OnnxConstant, OnnxFolded, OnnxInitializer


def _attrs(node: Any, opsets: dict[str, int]) -> dict[str, Any]:
    """The node's attributes, with every default its op schema (at the model's opset) defines filled in."""
    out = schema_defaults(node.op_type, node.domain, opsets.get(node.domain or "", 1))
    for a in node.attribute:
        if a.type == onnx.AttributeProto.TENSOR:
            out[a.name] = numpy_helper.to_array(a.t)
        elif a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            out[a.name] = a  # subgraphs are opaque to the rules (If/Loop/Scan are barriers)
        else:
            out[a.name] = helper.get_attribute_value(a)
            if isinstance(out[a.name], bytes):
                out[a.name] = out[a.name].decode()
    return out


@functools.lru_cache(maxsize=None)
def _schema_defaults(op_type: str, domain: str, version: int) -> dict[str, Any]:
    try:
        schema = onnx.defs.get_schema(op_type, version, domain)
    except onnx.defs.SchemaError:  # not an ONNX op (a custom domain): no defaults known
        return {}
    out: dict[str, Any] = {}
    for name, attribute in schema.attributes.items():
        default = attribute.default_value
        if default.type != onnx.AttributeProto.UNDEFINED:
            value = helper.get_attribute_value(default)
            out[name] = value.decode() if isinstance(value, bytes) else value
    return out


def schema_defaults(op_type: str, domain: str = "", version: int = 17) -> dict[str, Any]:
    """{attribute: default} from the ONNX schema of `op_type` at opset `version` (Softmax's axis is 1 before opset
    13 and -1 from then on)."""
    return dict(_schema_defaults(op_type, domain or "", int(version)))


def infer_shapes(model: Any, batch: int = 1, input_shapes: InputShapes | None = None) -> dict[str, Shape]:
    """`{tensor: static shape}` from ONNX shape inference on a weight-free copy.

    Free input dimensions are set to `batch` (the first) or taken from `input_shapes` ({name or None: shape}).
    """
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g = light.graph
    g.node.extend(model.graph.node)
    g.output.extend(model.graph.output)
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        vi = g.input.add()
        vi.CopyFrom(inp)
        given = (input_shapes or {}).get(inp.name, (input_shapes or {}).get(None))
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.Clear()
                d.dim_value = batch if (i == 0 or given is None) else int(given[i])
    shapes: dict[str, Shape] = {}
    for init in model.graph.initializer:  # weights as typed inputs without data
        g.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        shapes[init.name] = tuple(init.dims)
    # shape-carrying constants (Reshape targets) must keep their values for inference to work
    small = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT64 and np.prod(i.dims) <= 16]
    g.initializer.extend(small)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    except Exception:
        inferred = light
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        if all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes.setdefault(vi.name, tuple(d.dim_value for d in tt.shape.dim))
    return shapes


def runtime_shapes(model: Any, names: list[str], input_shapes: InputShapes | None = None) -> dict[str, Shape]:
    """Shapes of `names` read off one onnxruntime run at batch 1, for graphs whose shapes are computed at run time
    (tf2onnx's Shape→Gather→Concat chains in attention); {} when the model cannot run here (custom ops)."""
    import onnxruntime as ort

    from spa_keras.bridges import onnx_io
    from spa_keras.common.tensors import random_batch

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feeds = random_batch(onnx_io.input_specs(model), input_shapes, batch=1)
        values = sess.run(names, feeds)
    except Exception:  # the caller keeps these shapes unknown: the ops touching them become barriers
        return {}
    return {n: tuple(v.shape) for n, v in zip(names, values)}


def _fold(node: Node, values: list[np.ndarray]) -> np.ndarray | None:
    """The value of a layout op applied to constants (exporters write biases as Reshape(bias, [1, C, 1, 1]))."""
    x = values[0]
    op = node.op_type
    if op == "ConstantOfShape":  # weights of the onnx light zoo: a constant filled to a shape
        fill = node.attrs.get("value", np.zeros(1, np.float32))
        return np.full([int(d) for d in x], fill.reshape(-1)[0], dtype=fill.dtype)
    if op in ("Identity", "Dropout"):
        return x
    if op == "Cast":
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"]))
    if op == "Reshape":
        shape = [x.shape[i] if d == 0 and not node.attrs.get("allowzero") else d for i, d in enumerate(values[1])]
        return x.reshape(shape)
    if op == "Transpose":
        return x.transpose(node.attrs.get("perm"))
    if op == "Flatten":
        axis = node.attrs.get("axis", 1) % max(x.ndim, 1)
        return x.reshape(int(np.prod(x.shape[:axis])), -1)
    axes = node.attrs.get("axes")
    if axes is None and len(values) > 1:
        axes = values[1]
    if op == "Unsqueeze":
        assert axes is not None  # Unsqueeze names its axes (an attribute, or an input from opset 13)
        out = x
        for a in sorted(int(a) % (x.ndim + len(axes)) for a in axes):
            out = np.expand_dims(out, a)
        return out
    if op == "Squeeze":
        return np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes))
    return _fold_reference(node, values)


FOLD_LIMIT = 1 << 22  # elements: larger constant subgraphs stay as they are


def _fold_reference(node: Node, values: list[np.ndarray]) -> np.ndarray | None:
    """Any other op on constants (a position-embedding Slice, shape arithmetic), by onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    if sum(v.size for v in values) > FOLD_LIMIT or node.op_type.startswith("Random"):
        return None
    names = [f"in{i}" for i in range(len(values))]
    proto = helper.make_node(node.op_type, names, ["out"], **{k: v for k, v in node.attrs.items()
                                                               if not isinstance(v, onnx.AttributeProto)})
    try:
        # run gives a list (a dict only with intermediate=True), which its annotation does not tell apart
        out = ReferenceEvaluator(proto).run(None, dict(zip(names, values)))[0]  # type: ignore[index]
    except Exception:  # an op the reference evaluator does not know: it stays an op
        return None
    return np.asarray(out)


# ops on constants are computed here (numpy for layout ops, the reference evaluator for the rest), except ops with
# weights as operands whose structure the rules must see
UNFOLDABLE = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "If", "Loop", "Scan"}


def _outer_scope_reads(node: Any) -> list[str]:
    """Names the subgraphs of `node` read without defining them (recursively)."""
    reads: list[str] = []
    for attr in node.attribute:
        for graph in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
            for inner in graph.node:
                for t in list(inner.input) + _outer_scope_reads(inner):
                    if t and t not in defined and t not in reads:
                        reads.append(t)
                defined.update(inner.output)
    return reads


def from_onnx(model: Any, input_shapes: InputShapes | None = None) -> SPAGraph:
    """Build an `SPAGraph` from a ModelProto (nodes in topological order); `input_shapes` fills free dims."""
    params = {i.name: Param(i.name, numpy_helper.to_array(i), OnnxInitializer(i.name)) for i in model.graph.initializer}
    opsets = {o.domain if o.domain != "ai.onnx" else "": o.version for o in model.opset_import}
    nodes = []
    for index, n in enumerate(model.graph.node):
        attrs = _attrs(n, opsets)
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and "value" in attrs:
            params[n.output[0]] = Param(n.output[0], np.asarray(attrs["value"]), OnnxConstant(index))
            continue
        if (n.domain in ("", "ai.onnx") and n.input and len(n.output) == 1 and n.op_type not in UNFOLDABLE
                and all(not t or t in params for t in n.input)):
            node = Node(n.name, n.op_type, list(n.input), list(n.output), attrs, n.domain, index)
            value = _fold(node, [params[t].value for t in n.input if t])
            if value is not None:  # surgery replaces the node by an initializer when the value changes
                params[n.output[0]] = Param(n.output[0], np.asarray(value), OnnxFolded(index))
                continue
        # tensors a subgraph (If, Loop, Scan) reads from the outer scope count as inputs: rules see them as read by
        # an op they do not know (a barrier), so no channel of theirs is cut under the subgraph's feet
        outer = [t for t in _outer_scope_reads(n) if t not in n.input]
        inputs = list(n.input) + outer
        if outer:  # the report says why a channel read only inside a branch stays
            attrs["reason"] = (f"its subgraph reads {', '.join(outer[:3])}{' ...' if len(outer) > 3 else ''} from "
                               f"the outer scope (no rule for op {n.op_type})")
        nodes.append(Node(n.name or f"{n.op_type}_{index}", n.op_type, inputs, list(n.output), attrs, n.domain,
                          index))
    folded_inputs = {t for i, n in enumerate(model.graph.node) if params.get(n.output[0] if n.output else "")
                     and params[n.output[0]].handle == OnnxFolded(i) for t in n.input}
    consumed = {t for n in nodes for t in n.inputs}
    for name in folded_inputs - consumed - {o.name for o in model.graph.output}:
        if name in params:
            params[name].counted = False
    for p in params.values():  # ONNX convention: parameters are floating-point weights, not shape constants
        p.counted = p.counted and p.value.dtype.kind == "f"
    shapes = infer_shapes(model, input_shapes=input_shapes)
    for name, p in params.items():
        shapes[name] = tuple(p.value.shape)
    missing = [t for n in nodes for t in n.outputs if t and t not in shapes]
    if missing:
        shapes.update(runtime_shapes(model, missing, input_shapes))
    inputs = [i.name for i in model.graph.input if i.name not in params]
    outputs = [o.name for o in model.graph.output]
    return SPAGraph(nodes, shapes, params, inputs, outputs, opset=opsets.get("", 1))
