"""ONNX files: load with clear errors, validate (checker + onnxruntime), run, save atomically.

Example:

>>> model = load("model.onnx")                      # doctest: +SKIP
>>> outputs = run(model, random_batch(input_specs(model)))  # doctest: +SKIP
"""

import os
import re

import numpy as np
import onnx
from onnx import helper

from spa_keras.common import files
from spa_keras.common.errors import ConversionError, InputError, first_line
from spa_keras.common.tensors import TensorSpec


# what onnx.checker and onnxruntime say, without their C++ source paths and signatures
_NOISE = [(re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : "), ""),
          (re.compile(r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' Status Message: "),
           r"node \2 (\1): "),
          (re.compile(r"/onnxruntime_src/\S+:\d+ "), ""),
          (re.compile(r"onnxruntime::[\w:<>~]+\([^)]*\)(\s*const)?\s*(\[with [^\]]*\]\s*)?"), ""),
          (re.compile(r"==> Context: Bad node spec for node\. Name: (\S*) OpType: (\S+)"), r"(node \1)"),
          (re.compile(r"Exception during initialization: "), "")]


def library_message(exc, limit=300) -> str:
    """One line of what onnx or onnxruntime said: the node it names kept, source paths and C++ signatures
    dropped."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    for pattern, replacement in _NOISE:
        text = pattern.sub(replacement, text)
    return text[:limit]


def load(path):
    """Load an ONNX file, external data included; a file that is not ONNX gets an `InputError` naming it."""
    path = str(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise InputError(f"{path}: not a readable ONNX file ({first_line(exc)}); is it truncated or another format?")
    if model.ir_version == 0 or not model.opset_import:
        raise InputError(f"{path}: not an ONNX model (no IR version or opset); is it another format?")
    if not model.graph.output:
        raise InputError(f"{path}: the model's graph has no outputs; nothing to prune")
    return model


def unknown_ops(model):
    """`[(op_type, node name)]` of nodes whose op is not in their domain's ONNX schema (left-over TF ops, ...)."""
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    local = {f.name for f in model.functions}
    found = []
    for node in _all_nodes(model.graph):
        domain = node.domain or "ai.onnx"
        if domain not in ("ai.onnx", "ai.onnx.ml") or node.op_type in local:
            continue  # other domains (com.microsoft, ...) are checked by onnxruntime
        try:
            onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), node.domain)
        except onnx.defs.SchemaError:
            found.append((node.op_type, node.name or "(unnamed)"))
    return found


# quantised graphs: their integer weights and per-channel scales would need slicing together with their channels
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                 "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearGlobalAveragePool",
                 "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool", "QGemm", "DynamicQuantizeMatMul",
                 "MatMulIntegerToFloat", "QAttention", "QOrderedMatMul", "MatMulNBits"}


def refuse_quantized(model, where="the model"):
    """Quantised models (QDQ or QLinear/Integer ops) are refused with the way that works: prune the float model,
    then quantise the slim one."""
    for node in _all_nodes(model.graph):
        if node.op_type in QUANTIZED_OPS:
            raise InputError(f"{where}: a quantised model (node {node.name or '(unnamed)'}: {node.op_type}); spa-keras "
                             "prunes float models: prune the model it was quantised from, then quantise the slim "
                             "model (onnxruntime.quantization, or -o slim.tflite --precision int8)")


def check(model, where="model"):
    """onnx.checker (full, with shape inference) plus an onnxruntime session; raise `ConversionError` on failure."""
    bad = unknown_ops(model)
    if bad:
        listed = ", ".join(f"{op} (node {name})" for op, name in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise ConversionError(f"{where}: {len(bad)} node(s) are not ONNX operators: {listed}")
    try:
        data = model.SerializeToString()  # once, for the checker and onnxruntime
    except ValueError:  # over protobuf's 2 GB: check the proto without the full (shape-inferring) pass
        data = None
    try:
        onnx.checker.check_model(data if data is not None else model, full_check=data is not None)
    except Exception as exc:
        raise ConversionError(f"{where}: onnx.checker rejects the model: {library_message(exc)}") from exc
    return session(data if data is not None else model, where, optimize=False)


def repaired(model, where="model"):
    """A checked copy of `model` with what onnxruntime forgives and onnx.checker does not put right: nodes in
    topological order, stale `value_info` dropped, graph outputs' declared types and shapes inferred anew. Raises
    the checker's `ConversionError` when that is not enough (a model onnx.checker accepts comes back as it is)."""
    try:
        return model, check(model, where=where)
    except ConversionError as first:
        rejected = str(first).split(": ", 2)[-1][:120]
        try:  # only what onnxruntime runs as written is repaired: anything else is the model's fault, said as such
            session(model, where, optimize=False)
        except ConversionError:
            raise first from None
        fixed = onnx.ModelProto()
        fixed.CopyFrom(model)
        del fixed.graph.value_info[:]
        if not _sort_nodes(fixed.graph):
            raise
        _infer_outputs(fixed)
        try:
            session_ = check(fixed, where=where)
        except ConversionError:
            raise first from None
    import warnings

    warnings.warn(f"{where}: onnx.checker rejected the model as it was written ({rejected}); "
                  "pruned with its nodes sorted and its declared shapes inferred anew", stacklevel=2)
    return fixed, session_


def _sort_nodes(graph) -> bool:
    """Put `graph`'s nodes in topological order (Kahn); False when a node reads a tensor nothing makes, or a cycle."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(t in known for t in n.input)]
        if not ready:
            return False
        for n in ready:
            known.update(n.output)
        ordered += ready
        pending = [n for n in pending if not any(n is r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)
    return True


def _infer_outputs(model):
    """Replace the graph outputs' declared types by what shape inference finds (keeping the element type when
    inference finds none)."""
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return
    types = {v.name: v.type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        found = types.get(out.name)
        if found is not None and found.tensor_type.elem_type:
            out.type.CopyFrom(found)


def session(model, where="model", optimize=True):
    """An onnxruntime CPU session for a ModelProto, serialised bytes or a path (`optimize=False`: only load it,
    which is all a validity check needs, and faster)."""
    import onnxruntime as ort

    from spa_keras.common.console import debug_enabled

    opts = ort.SessionOptions()
    opts.log_severity_level = 0 if debug_enabled() else 4  # a failing run is our one-line error, not ORT's log line
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model if isinstance(model, (str, os.PathLike, bytes)) else model.SerializeToString()
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ConversionError(f"{where}: onnxruntime cannot load the model: {library_message(exc)}") from exc


def _dims(type_proto):
    shape = type_proto.tensor_type.shape
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim)


def input_specs(model):
    """The graph inputs that are not initializers, as `TensorSpec`s."""
    inits = {i.name for i in model.graph.initializer}
    return [TensorSpec(i.name, _dims(i.type), helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name)
            for i in model.graph.input if i.name not in inits]


def run(model, feeds):
    """Run `model` (ModelProto, path or InferenceSession) on `{input name: array}`; return `{output name: array}`."""
    sess = model if hasattr(model, "get_inputs") else session(model)
    names = [i.name for i in sess.get_inputs()]
    arrays = _match_feeds(names, feeds)
    outputs = sess.run(None, arrays)
    return {o.name: v for o, v in zip(sess.get_outputs(), outputs)}


def _match_feeds(names, feeds):
    if set(names) <= set(feeds):
        return {n: feeds[n] for n in names}
    if len(names) == len(feeds):
        return dict(zip(names, feeds.values()))
    raise InputError(f"the model expects inputs {names} but was given {list(feeds)}")


def require_runs(model, feeds, where="the input model"):
    """Raise `InputError` when `model` does not run in onnxruntime on `feeds` (shapes it was not made for, or a
    broken model), or gives NaN or infinity on them."""
    shapes = ", ".join(f"{name} {tuple(v.shape)}" for name, v in feeds.items())
    try:
        outputs = run(session(model, where, optimize=False), feeds)
    except (InputError, ConversionError):
        raise
    except Exception as exc:
        raise InputError(f"{where} does not run in onnxruntime at input shape {shapes}: {library_message(exc)} (fix "
                         "the model, or the input shape if it is not one the model was made for)") from exc
    bad = [name for name, v in outputs.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    weight = _non_finite_weight(model) if bad else None  # (NaN from a random batch alone can be the data's fault)
    if weight:
        raise InputError(f"{where}: weight {weight} holds NaN or infinity (output {bad[0]} is NaN or infinite on a "
                         "random batch); fix the model first")


def _non_finite_weight(model):
    """The name of the first initializer or Constant holding NaN or infinity, or None."""
    from onnx import numpy_helper

    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node if n.op_type == "Constant"
                                               for a in n.attribute if a.name == "value"]
    for tensor in tensors:
        value = numpy_helper.to_array(tensor)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return tensor.name or "(a Constant)"
    return None


def save(model, path):
    """Write `model` to `path` atomically (one file; weights over 2 GB go to a `.data` file beside it)."""
    large = model.ByteSize() > 2**31 - 2**20
    with files.atomic_output(path) as tmp:
        onnx.save(model, tmp, save_as_external_data=large, location=os.path.basename(path) + ".data")
        if large:  # onnx wrote the weights beside tmp under the final name's '.data'; move them first
            os.replace(tmp + ".data", str(path) + ".data")
    return path


def rename_outputs(model, names):
    """Rename graph outputs in place (producer and consumers follow), for stable, framework-given names."""
    for out, new in zip(model.graph.output, names):
        old = out.name
        if old == new:
            continue
        for node in model.graph.node:
            node.output[:] = [new if o == old else o for o in node.output]
            node.input[:] = [new if i == old else i for i in node.input]
        out.name = new
    return model


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


