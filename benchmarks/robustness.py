"""Does `spa prune` fail cleanly on broken ONNX models? A seeded fuzz of mutated small models, each outcome classified.

    python benchmarks/robustness.py [--seed 0] [--count 200] [--quick] [--json PATH] [--workdir DIR] [--timeout 180]
    python benchmarks/robustness.py --table benchmarks/reference/robustness.json [--markdown]
    python benchmarks/robustness.py --case 17 [--seed 0] [--workdir DIR]   # write case 17's model, print its command

Base models, small and real, built here without downloads: the demo's Fashion-MNIST ResNet (random weights,
exported by tf2onnx: NHWC Transposes folded into Reshape, BatchNorm folded into Conv) and five graphs from
tests/ (a Conv-BN-ReLU ResNet block with a projection shortcut and a Gemm head; Concat, Split and Slice; depthwise,
grouped Conv and squeeze-excitation; tf2onnx's NHWC Transpose-Flatten-MatMul pattern; multi-head attention out of
MatMul, Reshape and Transpose). Case i mutates base i mod 6 once, with numpy's Generator seeded by (seed, i):
an attribute changed, added or removed; an initializer dropped, resized along one axis, given other values or
another dtype; a graph input's dims or dtype changed; two inputs of a node swapped; a node deleted (its consumers
rewired to its input, or left dangling); an op type changed to a neighbouring op; a duplicated output name or
node; a dangling or cyclic reference; nodes out of order; another opset or IR version; a changed graph output; two
layers sharing one weight; an initializer turned into a Constant node or listed as a graph input; a wrong
value_info. The first cases of a seed are the same whatever --count, so --quick (20 cases) is a prefix of the run.

Each mutated model is first run in onnxruntime (optimisations off, a random feed at its declared input shapes,
free dimensions filled from the base's), then pruned with `spa prune MODEL -o OUT.onnx --flops 0.3 --input-shape
...` in-process (click's runner, file descriptors 1 and 2 captured too), in a child process that a crash or a
hang (--timeout per case) does not take down. Outcomes:

- `clean error`: a non-zero exit and stderr one `spa: error: ...` line (besides `spa: note:` lines) that does not
  ask to be reported;
- `valid output`: exit 0, and the output passes `onnx.checker.check_model(full_check=True)`, runs in onnxruntime
  with optimisations off and gives the input model's output shapes on the same feed;
- `internal error`: `spa: internal error`, a traceback, any other stderr, or a "please report";
- `invalid output`: exit 0, but the output is missing, fails the checker, does not run, has other output shapes,
  or was written from an input onnxruntime cannot run (spa should have refused);
- `crash` / `timeout`: the child process died (signal) or a case ran past --timeout;
- `left files`: anything but the output left in its folder (a `.partial` work folder); `input changed`: the input
  file's sha256 differs after the run. Both override the outcome above.

Internal errors are run again with `spa --debug` and the innermost spa_keras frame of the traceback is recorded.
The table counts outcomes per mutation kind and per base; every case goes to benchmarks/results/robustness.json
(seed, base, mutation, whether onnxruntime ran the input, outcome, the first line of stderr) with a one-line summary.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

OUT = os.path.join(HERE, "results", "robustness.json")
BASES = ("demo_resnet", "resnet_block", "concat_split_slice", "depthwise_grouped_se", "nhwc_flatten", "attention")
QUICK = 20
FAILURES = ("internal error", "invalid output", "crash", "timeout", "left files", "input changed")
CATEGORIES = ("clean error", "valid output") + FAILURES
PRUNE_ARGS = ("--flops", "0.3")


# ---- base models ----------------------------------------------------------------------------------------------

def build_bases():
    """{name: onnx.ModelProto} for BASES (the demo ResNet needs TensorFlow for its tf2onnx export)."""
    import keras

    from spa_keras.common.console import quiet
    from spa_keras.pipeline.convert import convert
    from spa_keras.ui.demo import build_demo_model
    from tests.test_attention import mha_model
    from tests.test_engine_invariants import (concat_split_model, depthwise_grouped_se_model, nhwc_flatten_model,
                                              resnet_block_model)

    import onnx

    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "demo.onnx")
        with quiet():
            convert(build_demo_model(), path)
        demo = onnx.load(path)
    return {"demo_resnet": demo, "resnet_block": resnet_block_model(), "concat_split_slice": concat_split_model(),
            "depthwise_grouped_se": depthwise_grouped_se_model(), "nhwc_flatten": nhwc_flatten_model(),
            "attention": mha_model()}


def load_bases(workdir):
    """The base models, built once per work folder and read back from disk (every child sees the same bytes)."""
    import onnx

    folder = os.path.join(workdir, "bases")
    if not all(os.path.exists(os.path.join(folder, f"{name}.onnx")) for name in BASES):
        os.makedirs(folder, exist_ok=True)
        for name, model in build_bases().items():
            onnx.save(model, os.path.join(folder, f"{name}.onnx"))
    return {name: onnx.load(os.path.join(folder, f"{name}.onnx")) for name in BASES}


# ---- mutations ------------------------------------------------------------------------------------------------
# Each takes a copy of the model and a numpy Generator, changes the copy, and returns a description, or None when
# the model offers nothing to mutate that way (another kind is drawn).

def _inits(m):
    return {t.name: t for t in m.graph.initializer}


def _graph_inputs(m):
    inits = _inits(m)
    return [v for v in m.graph.input if v.name not in inits]


def _pick(rng, items):
    items = list(items)
    return items[int(rng.integers(len(items)))] if items else None


def _label(node):
    return f"{node.name or '?'} ({node.op_type})"


def _users(m, name):
    return [(n, i) for n in m.graph.node for i, x in enumerate(n.input) if x == name]


def _user_label(m, name):
    users = _users(m, name)
    return ", ".join(f"input {i} of {_label(n)}" for n, i in users[:2]) or "unused"


def _fmt(value):
    from onnx import helper

    if hasattr(value, "HasField"):  # an AttributeProto
        value = helper.get_attribute_value(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    if hasattr(value, "dims"):
        return f"tensor{list(value.dims)}"
    return str(value)


def attr_change(m, rng):
    from onnx import AttributeProto, helper

    pairs = [(n, a) for n in m.graph.node for a in n.attribute
             if a.type in (AttributeProto.INT, AttributeProto.INTS, AttributeProto.FLOAT, AttributeProto.STRING)]
    if not pairs:
        return None
    node, attr = _pick(rng, pairs)
    old = helper.get_attribute_value(attr)
    if attr.type == AttributeProto.INT:
        new = int(_pick(rng, [v for v in (old + 1, old - 1, 0, -1, old + 2, 3, old * 4) if v != old]))
    elif attr.type == AttributeProto.INTS:
        new = list(old)
        how = rng.integers(3) if new else 1
        if how == 0:
            i = int(rng.integers(len(new)))
            new[i] = int(_pick(rng, [v for v in (new[i] + 1, new[i] - 1, 0, -1, new[i] + 2, 7) if v != new[i]]))
        elif how == 1:
            new.append(int(_pick(rng, [0, 1, 2, 3])))
        else:
            new.pop(int(rng.integers(len(new))))
    elif attr.type == AttributeProto.FLOAT:
        new = float(_pick(rng, [v for v in (0.0, -1.0, 1e3, 2.0, float("nan")) if v != old]))
    else:
        new = _pick(rng, [s for s in (b"SAME_UPPER", b"SAME_LOWER", b"VALID", b"NOTSET", b"BOGUS") if s != old])
    attr.CopyFrom(helper.make_attribute(attr.name, new))
    return f"{_label(node)} {attr.name}: {_fmt(old)} -> {_fmt(new)}"


# attributes worth adding, per op type (anything else gets an unknown attribute)
_EXTRA_ATTRS = {"Conv": [("dilations", [2, 2]), ("auto_pad", "SAME_UPPER"), ("group", 2), ("strides", [2, 2])],
                "Gemm": [("transA", 1), ("alpha", 0.5), ("transB", 0)],
                "Concat": [("axis", 2)], "Softmax": [("axis", 1)], "Flatten": [("axis", 2)],
                "Transpose": [("perm", [0, 1, 2, 3])], "GlobalAveragePool": [("axis", 1)],
                "BatchNormalization": [("training_mode", 1), ("momentum", 0.5)],
                "Squeeze": [("axes", [1, 2])], "Split": [("num_outputs", 3)], "Reshape": [("allowzero", 1)],
                "LeakyRelu": [("alpha", -3.0)]}


def attr_add(m, rng):
    from onnx import helper

    node = _pick(rng, m.graph.node)
    options = [(k, v) for k, v in _EXTRA_ATTRS.get(node.op_type, []) if k not in {a.name for a in node.attribute}]
    name, value = _pick(rng, options) if options and rng.random() < 0.8 else ("fuzz_attribute", 1)
    node.attribute.append(helper.make_attribute(name, value))
    return f"{_label(node)} + {name}={_fmt(value)}"


def attr_remove(m, rng):
    pairs = [(n, a) for n in m.graph.node for a in n.attribute]
    if not pairs:
        return None
    node, attr = _pick(rng, pairs)
    text = f"{_label(node)} - {attr.name} (was {_fmt(attr)})"
    node.attribute.remove(attr)
    return text


def drop_initializer(m, rng):
    init = _pick(rng, m.graph.initializer)
    if init is None:
        return None
    text = f"dropped initializer {init.name} {list(init.dims)} ({_user_label(m, init.name)})"
    m.graph.initializer.remove(init)
    return text


def initializer_dims(m, rng):
    import numpy as np
    from onnx import numpy_helper

    inits = [t for t in m.graph.initializer if len(t.dims) >= 1 and int(np.prod(t.dims)) > 1]
    init = _pick(rng, inits)
    if init is None:
        return None
    value = numpy_helper.to_array(init)
    axis = int(rng.integers(value.ndim))
    size = value.shape[axis]
    new = int(_pick(rng, [s for s in (size - 1, size + 1, size - 2, size + 2, 2 * size, 1) if s >= 1 and s != size]))
    if new < size:
        value = np.take(value, range(new), axis=axis)
    else:
        pad = list(value.shape)
        pad[axis] = new - size
        extra = (rng.normal(0, 0.1, pad) if value.dtype.kind == "f" else np.ones(pad)).astype(value.dtype)
        value = np.concatenate([value, extra], axis=axis)
    text = f"initializer {init.name} {list(init.dims)} -> {list(value.shape)} ({_user_label(m, init.name)})"
    init.CopyFrom(numpy_helper.from_array(value, init.name))
    return text


def initializer_values(m, rng):
    import numpy as np
    from onnx import numpy_helper

    init = _pick(rng, m.graph.initializer)
    if init is None:
        return None
    value = numpy_helper.to_array(init).copy()
    flat = value.reshape(-1)
    if value.dtype.kind in "iu":
        if not flat.size:
            return None
        i = int(rng.integers(flat.size))
        old = int(flat[i])
        flat[i] = int(_pick(rng, [v for v in (old + 1, old - 1, 0, -1, 2 * old + 3) if v != old]))
        how = f"element {i}: {old} -> {int(flat[i])}"
    else:
        how = _pick(rng, ["all zeros", "one NaN", "one inf", "first slice zero", "all equal"])
        if how == "all zeros":
            value[...] = 0
        elif how == "one NaN":
            flat[int(rng.integers(flat.size))] = np.nan
        elif how == "one inf":
            flat[int(rng.integers(flat.size))] = np.inf
        elif how == "first slice zero" and value.ndim:
            value[0] = 0
        else:
            value[...] = 0.5
    init.CopyFrom(numpy_helper.from_array(value, init.name))
    return f"initializer {init.name} {list(init.dims)} {how} ({_user_label(m, init.name)})"


def initializer_dtype(m, rng):
    import numpy as np
    from onnx import numpy_helper

    init = _pick(rng, [t for t in m.graph.initializer if t.data_type == 1])
    if init is None:
        return None
    dtype = _pick(rng, [np.float64, np.float16, np.int64, np.int32])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(dtype), init.name))
    return f"initializer {init.name} float32 -> {np.dtype(dtype).name} ({_user_label(m, init.name)})"


def input_dims(m, rng):
    inp = _pick(rng, _graph_inputs(m))
    if inp is None:
        return None
    shape = inp.type.tensor_type.shape
    old = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]
    how = int(rng.integers(5))
    if how == 0 or not shape.dim:  # a different value for one dimension
        i = int(rng.integers(len(shape.dim))) if shape.dim else None
        if i is None:
            return None
        d = shape.dim[i]
        cur = d.dim_value if d.HasField("dim_value") else 1
        d.Clear()
        d.dim_value = int(_pick(rng, [v for v in (cur + 1, cur - 1, 2 * cur, 1, 3) if v >= 1 and v != cur] or [2]))
    elif how == 1:  # rank - 1
        if len(shape.dim) < 2:
            return None
        del shape.dim[int(rng.integers(len(shape.dim)))]
    elif how == 2:  # rank + 1
        new = shape.dim.add()
        new.dim_value = 1
    elif how == 3:  # every dimension free
        for i, d in enumerate(shape.dim):
            d.Clear()
            d.dim_param = f"d{i}"
    else:  # a fixed batch of 2 (or 0)
        d = shape.dim[0]
        d.Clear()
        d.dim_value = int(_pick(rng, [2, 0]))
    new = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]
    return f"graph input {inp.name} dims {_fmt(old)} -> {_fmt(new)}"


def input_dtype(m, rng):
    from onnx import TensorProto

    inp = _pick(rng, _graph_inputs(m))
    if inp is None:
        return None
    new = _pick(rng, [TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT64, TensorProto.UINT8])
    inp.type.tensor_type.elem_type = new
    return f"graph input {inp.name} dtype float -> {TensorProto.DataType.Name(new).lower()}"


def swap_inputs(m, rng):
    node = _pick(rng, [n for n in m.graph.node if len([x for x in n.input if x]) >= 2])
    if node is None:
        return None
    slots = [i for i, x in enumerate(node.input) if x]
    i, j = sorted(int(k) for k in rng.choice(slots, 2, replace=False))
    node.input[i], node.input[j] = node.input[j], node.input[i]
    return f"{_label(node)} inputs {i} and {j} swapped"


def delete_node(m, rng):
    node = _pick(rng, m.graph.node)
    if node is None:
        return None
    rewire = bool(rng.random() < 0.6) and bool(node.input) and bool(node.input[0])
    if rewire:
        for user in m.graph.node:
            for k, x in enumerate(user.input):
                if x == node.output[0]:
                    user.input[k] = node.input[0]
        for out in m.graph.output:
            if out.name == node.output[0]:
                out.name = node.input[0]
    m.graph.node.remove(node)
    return f"deleted {_label(node)}" + (", consumers rewired to its first input" if rewire else ", outputs dangling")


# neighbouring ops: what a typo, a wrong export or a hand edit could put in the place of each
_NEIGHBOURS = {"Relu": ["Sigmoid", "LeakyRelu", "Elu", "Tanh", "Abs", "Identity"],
               "Sigmoid": ["HardSigmoid", "Relu", "Tanh"], "Add": ["Mul", "Sub", "Max", "Sum"],
               "Mul": ["Add", "Div", "Pow"], "Conv": ["ConvTranspose", "ConvInteger", "MaxPool", "Gemm"],
               "BatchNormalization": ["InstanceNormalization", "LayerNormalization", "Identity"],
               "GlobalAveragePool": ["GlobalMaxPool", "ReduceMean", "AveragePool"],
               "Gemm": ["MatMul", "Conv", "Add"], "MatMul": ["Gemm", "Mul", "Add", "MatMulInteger"],
               "Concat": ["Sum", "Add", "Split"], "Split": ["Concat", "Slice"], "Slice": ["Split", "Identity"],
               "Flatten": ["Reshape", "Squeeze", "Identity"], "Reshape": ["Flatten", "Expand", "Identity"],
               "Transpose": ["Identity", "Reshape"], "Softmax": ["LogSoftmax", "Hardmax", "Sigmoid"],
               "Squeeze": ["Unsqueeze", "Flatten", "Identity"], "Unsqueeze": ["Squeeze"]}


def op_type(m, rng):
    node = _pick(rng, [n for n in m.graph.node if n.op_type in _NEIGHBOURS])
    if node is None:
        return None
    old = node.op_type
    node.op_type = _pick(rng, _NEIGHBOURS[old])
    return f"{node.name or '?'}: {old} -> {node.op_type}"


def _two_nodes(m, rng):
    """Two distinct nodes in graph order, or None for a graph of one node."""
    nodes = list(m.graph.node)
    if len(nodes) < 2:
        return None
    i, j = sorted(int(k) for k in rng.choice(len(nodes), 2, replace=False))
    return nodes[i], nodes[j]


def duplicate_output(m, rng):
    pair = _two_nodes(m, rng)
    if pair is None:
        return None
    a, b = pair
    old = b.output[0]
    b.output[0] = a.output[0]
    rewired = bool(rng.random() < 0.5)
    if rewired:
        for user in m.graph.node:
            for k, x in enumerate(user.input):
                if x == old:
                    user.input[k] = a.output[0]
        for out in m.graph.output:
            if out.name == old:
                out.name = a.output[0]
    return (f"{_label(b)} output renamed to {a.output[0]}, the output of {_label(a)}"
            + (" (its consumers follow)" if rewired else " (its consumers left dangling)"))


def duplicate_node(m, rng):
    node = _pick(rng, m.graph.node)
    if node is None:
        return None
    position = list(m.graph.node).index(node)
    m.graph.node.insert(position + 1, node)
    return f"{_label(node)} duplicated (same outputs twice)"


def dangling_input(m, rng):
    node = _pick(rng, [n for n in m.graph.node if any(n.input)])
    if node is None:
        return None
    k = _pick(rng, [i for i, x in enumerate(node.input) if x])
    old = node.input[k]
    node.input[k] = "fuzz_missing_tensor" if rng.random() < 0.7 else ""
    return f"{_label(node)} input {k} ({old}) -> {node.input[k] or 'empty'}"


def cycle(m, rng):
    pair = _two_nodes(m, rng)
    if pair is None:
        return None
    a, b = pair
    slots = [k for k, x in enumerate(a.input) if x]
    if not slots:
        return None
    k = _pick(rng, slots)
    a.input[k] = b.output[0]
    return f"{_label(a)} input {k} -> {b.output[0]}, the output of the later {_label(b)}"


def reorder_nodes(m, rng):
    nodes = list(m.graph.node)
    if len(nodes) < 2:
        return None
    if rng.random() < 0.5:
        order = list(rng.permutation(len(nodes)))
        text = "nodes shuffled (not topologically sorted)"
    else:
        i = int(rng.integers(len(nodes) - 1))
        order = [k for k in range(len(nodes)) if k != i] + [i]
        text = f"{_label(nodes[i])} moved to the end"
    del m.graph.node[:]
    m.graph.node.extend(nodes[k] for k in order)
    return text


def opset(m, rng):
    how = int(rng.integers(3))
    if how == 0:
        entry = next(o for o in m.opset_import if o.domain in ("", "ai.onnx"))
        old, entry.version = entry.version, int(_pick(rng, [1, 7, 9, 11, 13, 21, 22, 99]))
        return f"default opset {old} -> {entry.version}"
    if how == 1:
        old, m.ir_version = m.ir_version, int(_pick(rng, [3, 4, 6, 10, 11, 99]))
        return f"ir_version {old} -> {m.ir_version}"
    node = _pick(rng, m.graph.node)
    node.domain = _pick(rng, ["com.microsoft", "fuzz.custom"])
    return f"{_label(node)} domain -> {node.domain}"


def graph_output(m, rng):
    from onnx import TensorProto, helper

    out = m.graph.output[0]
    how = int(rng.integers(5))
    produced = [x for n in m.graph.node for x in n.output if x and x != out.name]
    if how == 0:
        shape = out.type.tensor_type.shape
        if not shape.dim:
            return None
        d = shape.dim[-1]
        old = d.dim_value if d.HasField("dim_value") else d.dim_param
        d.Clear()
        d.dim_value = (old if isinstance(old, int) else 1) + 3
        return f"graph output {out.name} last dim {old} -> {d.dim_value}"
    if how == 1:
        out.type.tensor_type.elem_type = TensorProto.INT64
        return f"graph output {out.name} dtype float -> int64"
    if how == 2 and produced:
        old, out.name = out.name, _pick(rng, produced)
        out.type.tensor_type.ClearField("shape")
        return f"graph output {old} -> the intermediate tensor {out.name}"
    if how == 3 and produced:
        name = _pick(rng, produced)
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        return f"intermediate tensor {name} added as a second graph output"
    del m.graph.output[:]
    return "graph outputs removed"


def tie_weights(m, rng):
    """Two nodes share one weight (a valid model)."""
    inits = _inits(m)
    slots = [(n, k, tuple(inits[x].dims)) for n in m.graph.node for k, x in enumerate(n.input)
             if x in inits and len(inits[x].dims) >= 2]
    pairs = [(a, b) for a in slots for b in slots if a[2] == b[2] and a[0].input[a[1]] != b[0].input[b[1]]]
    if not pairs:
        return None
    (na, ka, dims), (nb, kb, _) = _pick(rng, pairs)
    nb.input[kb] = na.input[ka]
    return f"{_label(nb)} input {kb} shares {na.input[ka]} {list(dims)} with {_label(na)}"


def initializer_form(m, rng):
    """An initializer as a Constant node, or also listed as a graph input (valid models, older exporters)."""
    from onnx import helper

    init = _pick(rng, m.graph.initializer)
    if init is None:
        return None
    if rng.random() < 0.5:
        m.graph.initializer.remove(init)
        m.graph.node.insert(0, helper.make_node("Constant", [], [init.name], name=f"const_{init.name}", value=init))
        return f"initializer {init.name} {list(init.dims)} -> a Constant node"
    m.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return f"initializer {init.name} {list(init.dims)} also listed as a graph input"


def wrong_value_info(m, rng):
    from onnx import TensorProto, helper

    outputs = [n.output[0] for n in m.graph.node if n.output and n.output[0] not in {o.name for o in m.graph.output}]
    name = _pick(rng, outputs)
    if name is None:
        return None
    dims = _pick(rng, [[1, 5, 8, 8], [1, 3], [2], [1, 7, 7, 7, 7]])
    dtype = _pick(rng, [TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.INT32])
    del m.graph.value_info[:]
    m.graph.value_info.append(helper.make_tensor_value_info(name, dtype, dims))
    return f"value_info {name}: {TensorProto.DataType.Name(dtype).lower()}{dims}"


# the kinds weigh more than the rest
MUTATIONS = {"attribute change": (attr_change, 3), "attribute added": (attr_add, 1),
             "attribute removed": (attr_remove, 1), "initializer dropped": (drop_initializer, 2),
             "initializer dims": (initializer_dims, 3), "initializer values": (initializer_values, 1),
             "initializer dtype": (initializer_dtype, 1), "input dims": (input_dims, 2),
             "input dtype": (input_dtype, 1), "inputs swapped": (swap_inputs, 2), "node deleted": (delete_node, 2),
             "op type": (op_type, 2), "duplicate output": (duplicate_output, 1), "duplicate node": (duplicate_node, 1),
             "dangling input": (dangling_input, 1), "cycle": (cycle, 1), "node order": (reorder_nodes, 1),
             "opset": (opset, 1), "graph output": (graph_output, 1), "shared weight": (tie_weights, 1),
             "initializer form": (initializer_form, 1), "value_info": (wrong_value_info, 1)}


def mutate(base, rng):
    """(mutated copy of `base`, kind, description)."""
    import numpy as np

    from onnx import ModelProto

    kinds = list(MUTATIONS)
    weights = np.array([MUTATIONS[k][1] for k in kinds], dtype=float)
    for _ in range(50):
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        model = ModelProto()
        model.CopyFrom(base)
        text = MUTATIONS[kind][0](model, rng)
        if text is not None:
            return model, kind, text
    raise RuntimeError("no mutation applies")


def make_case(seed, index, bases):
    """Case `index` of `seed`: (base name, mutated model, kind, description); the same whatever the count."""
    import numpy as np

    rng = np.random.default_rng([seed, index])
    name = BASES[index % len(BASES)]
    model, kind, text = mutate(bases[name], rng)
    return name, model, kind, text


# ---- running one case -------------------------------------------------------------------------------------------

def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _first(text, limit=300):
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def _dims(value_info):
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def feeds_for(model, base, seed):
    """[(name, array)] for the model's graph inputs at their declared dims; free dims from the base's (1 when the
    base has none there)."""
    import numpy as np
    from onnx import helper

    rng = np.random.default_rng(seed)
    base_dims = [[d or 1 for d in _dims(v)] for v in _graph_inputs(base)]
    out = []
    for i, v in enumerate(_graph_inputs(model)):
        dims = _dims(v)
        ref = base_dims[i] if i < len(base_dims) and len(base_dims[i]) == len(dims) else [1] * len(dims)
        shape = [d if d is not None else r for d, r in zip(dims, ref)]
        try:
            dtype = helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
        except Exception:
            dtype = np.dtype(np.float32)
        if np.dtype(dtype).kind == "f":
            value = rng.standard_normal(shape).astype(dtype)
        elif np.dtype(dtype).kind in "iub":
            value = np.ones(shape, dtype=dtype)
        else:
            value = np.zeros(shape, dtype=np.float32)
        out.append((v.name, value))
    return out


def ort_shapes(path, feeds):
    """Output shapes of the model run in onnxruntime with optimisations off, feeding `feeds` by position."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(feeds):
        raise ValueError(f"{len(names)} inputs, {len(feeds)} fed")
    outputs = session.run(None, {n: v for n, (_, v) in zip(names, feeds)})
    return [list(o.shape) for o in outputs]


def input_shape_option(feeds):
    if not feeds:
        return []
    if len(feeds) == 1:
        return ["--input-shape", ",".join(str(d) for d in feeds[0][1].shape)]
    return ["--input-shape", ";".join(f"{n}:" + ",".join(str(d) for d in v.shape) for n, v in feeds)]


def invoke_spa(args):
    """Run `spa ARGS` in-process: (exit code, stderr text incl. what reached file descriptor 2, exception info)."""
    from click.testing import CliRunner

    from spa_keras.ui.cli import cli

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            result = CliRunner().invoke(cli, args)
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        err.seek(0)
        fd_err = err.read().decode(errors="replace")
    stderr = result.stderr + fd_err
    exc = result.exc_info if result.exception is not None and not isinstance(result.exception, SystemExit) else None
    return result.exit_code, stderr, exc


def _spa_frame(exc_info):
    """'spa_keras/x.py:123 in f: Type: message' for the innermost spa_keras frame of a traceback."""
    import traceback

    if exc_info is None:
        return None
    frames = traceback.extract_tb(exc_info[2])
    ours = [f for f in frames if f"{os.sep}spa_keras{os.sep}" in f.filename] or frames
    f = ours[-1] if ours else None
    where = f"{os.path.relpath(f.filename, ROOT)}:{f.lineno} in {f.name}" if f else "?"
    return f"{where}: {exc_info[0].__name__}: {_first(exc_info[1], 200)}"


def classify(code, stderr, exc):
    """(outcome before the file checks, the stderr line that tells)."""
    from spa_keras.common.console import is_progress_line

    lines = [line for line in stderr.splitlines() if line.strip() and not is_progress_line(line)]
    rest = [line for line in lines if not line.startswith("spa: note:")]
    please = any("please report" in line.lower() or "report it" in line.lower() for line in lines)
    line = rest[0] if rest else ""
    if exc is not None:
        return "internal error", f"uncaught {exc[0].__name__}: {_first(exc[1])}", please
    if code != 0:
        if len(rest) == 1 and rest[0].startswith("spa: error:") and not please:
            return "clean error", line, please
        return "internal error", line or f"exit {code} with no message", please
    if rest or please:
        return "internal error", line, please  # exit 0, but stderr has more than notes
    return "ok", line, please


def check_output(path, feeds, expected):
    """None when the written model is valid, else what is wrong with it."""
    import onnx

    if not os.path.isfile(path):
        return "exit 0 but no output file"
    if expected is None:
        return "wrote an output for an input onnxruntime cannot run"
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as exc:
        return f"checker: {_first(exc, 200)}"
    try:
        shapes = ort_shapes(path, feeds)
    except Exception as exc:
        return f"onnxruntime: {_first(exc, 200)}"
    if shapes != expected:
        return f"output shapes {shapes} != the input's {expected}"
    return None


def run_case(seed, index, bases, workdir, report=None):
    """Write case `index`, run it in onnxruntime and through `spa prune`, classify; returns the case's record."""
    import onnx

    start = time.perf_counter()
    base, model, kind, text = make_case(seed, index, bases)
    path = os.path.join(workdir, "inputs", f"case{index:04d}.onnx")
    out_dir = os.path.join(workdir, "outputs", f"case{index:04d}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    output = os.path.join(out_dir, "slim.onnx")
    feeds = feeds_for(model, bases[base], seed * 100003 + index)
    args = ["prune", path, "-o", output, *PRUNE_ARGS, *input_shape_option(feeds)]
    case = {"index": index, "seed": seed, "base": base, "kind": kind, "mutation": text,
            "command": "spa " + " ".join(args)}
    report and report(("start", index, dict(case, stage="onnxruntime on the input")))
    try:
        onnx.checker.check_model(path, full_check=True)
        case["input_checker"] = None
    except Exception as exc:
        case["input_checker"] = _first(exc, 200)
    try:
        expected = ort_shapes(path, feeds)
        case["input_runs_in_ort"], case["input_ort_error"] = True, None
    except Exception as exc:
        expected = None
        case["input_runs_in_ort"], case["input_ort_error"] = False, _first(exc, 200)
    case["expected_shapes"] = expected
    before = _sha256(path)
    report and report(("start", index, dict(case, stage="spa prune")))
    code, stderr, exc = invoke_spa(args)
    outcome, line, please = classify(code, stderr, exc)
    case.update(exit_code=code, stderr=line, stderr_lines=len(stderr.strip().splitlines()),
                notes=sum(1 for x in stderr.splitlines() if x.startswith("spa: note:")), please_report=please)
    if exc is not None:
        case["where"] = _spa_frame(exc)
    if outcome == "ok":
        report and report(("start", index, dict(case, stage="checking the output")))
        problem = check_output(output, feeds, expected)
        outcome = "valid output" if problem is None else "invalid output"
        case["output_problem"] = problem
    case["outcome"] = outcome
    left = sorted(set(os.listdir(out_dir)) - {"slim.onnx"})
    case["left_files"] = left
    case["input_changed"] = _sha256(path) != before
    case["category"] = "input changed" if case["input_changed"] else "left files" if left else outcome
    if outcome == "internal error" and "where" not in case:
        case["where"] = debug_traceback(path, out_dir, args)
    case["seconds"] = round(time.perf_counter() - start, 2)
    shutil.rmtree(out_dir, ignore_errors=True)
    folder = os.path.join(os.path.abspath(workdir), "")
    return {k: v.replace(folder, "<workdir>/") if isinstance(v, str) else v for k, v in case.items()}


def debug_traceback(path, out_dir, args):
    """Run the case again with `spa --debug` and return where in spa_keras it raised."""
    debug_out = os.path.join(out_dir, "debug", "slim.onnx")
    os.makedirs(os.path.dirname(debug_out), exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("SPA_DEBUG", "TF_CPP_MIN_LOG_LEVEL")}
    try:
        _, _, exc = invoke_spa(["--debug", *[debug_out if a.endswith("slim.onnx") else a for a in args]])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return _spa_frame(exc) or "no exception with --debug"


def _worker(seed, indices, workdir, results):
    """A child process: runs the cases in turn and sends ('start', i, partial record) and ('done', i, record) down
    the pipe `results` (a synchronous send: what was sent before a crash arrives)."""
    os.environ.pop("SPA_DEBUG", None)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from spa_keras.common.console import quiet

    with quiet():
        import keras  # noqa: F401  (TensorFlow's start-up noise stays out of the first case)
        import tensorflow  # noqa: F401
    bases = load_bases(workdir)
    for index in indices:
        results.send(("done", index, run_case(seed, index, bases, workdir, results.send)))
    results.send(("finished", None, None))


# ---- the fuzz ---------------------------------------------------------------------------------------------------

def run_fuzz(seed=0, count=200, workdir=None, timeout=180.0, chunk=50, progress=None):
    """Cases 0..count-1 of `seed`, each a record (see `run_case`); a child process per `chunk` cases, restarted
    after a crash or a timeout, which are recorded for the case that caused them."""
    import multiprocessing

    own = workdir is None
    workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="spa-robustness-"))
    os.makedirs(workdir, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    cases, pending = {}, list(range(count))
    try:
        while pending:
            todo, pending = pending[:chunk], pending[chunk:]
            results, sender = context.Pipe(duplex=False)
            proc = context.Process(target=_worker, args=(seed, todo, workdir, sender), daemon=True)
            proc.start()
            sender.close()
            started, limit, last = {}, timeout + 600, time.monotonic()  # the first case waits for start-up too
            while todo:
                try:
                    if not results.poll(1):
                        raise EOFError
                    what, index, record = results.recv()
                except EOFError:  # nothing yet, or the child is gone
                    alive = proc.is_alive()
                    if alive and time.monotonic() - last < limit:
                        time.sleep(0.05)
                        continue
                    if alive:
                        proc.kill()
                        proc.join()
                        category, detail = "timeout", f"no result after {limit:g} s"
                    else:
                        category, detail = "crash", f"the child process died (exit code {proc.exitcode})"
                    index = todo[0]
                    record = dict(started.get(index) or {"index": index, "seed": seed, "mutation": "?"})
                    record.update(category=category, outcome=category, stderr=detail + " during "
                                  + record.pop("stage", "start-up"), left_files=[], input_changed=False)
                    cases[index] = record
                    progress and progress(record)
                    pending = todo[1:] + pending
                    break
                if what == "finished":
                    break
                if what == "start":
                    if index not in started:
                        limit, last = timeout, time.monotonic()
                    started[index] = record
                    continue
                cases[index] = record
                todo.remove(index)
                progress and progress(record)
            if proc.is_alive():
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
            results.close()
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return [cases[i] for i in sorted(cases)]


def summarise(cases):
    """{'counts': {category: n}, 'please_report_unrunnable': n, 'line': the one-line summary}."""
    counts = {c: sum(1 for x in cases if x["category"] == c) for c in CATEGORIES}
    please = sum(1 for x in cases if x.get("please_report") and not x.get("input_runs_in_ort"))
    line = (f"robustness: {len(cases)} mutations: {counts['clean error']} clean errors, {counts['valid output']} "
            f"valid outputs, {counts['internal error']} internal errors, {counts['invalid output']} invalid outputs")
    extra = [f"{counts[c]} {c}{'s' if counts[c] != 1 and c != 'left files' else ''}" for c in FAILURES[2:]
             if counts[c]]
    if extra:
        line += ", " + ", ".join(extra).replace("input changeds", "inputs changed")
    if please:
        line += f"; {please} 'please report' on inputs onnxruntime cannot run"
    return {"counts": counts, "please_report_unrunnable": please, "line": line}


def save(report, path):
    """The report as JSON, one line per case."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    head = {k: v for k, v in report.items() if k != "cases"}
    lines = [json.dumps(c, ensure_ascii=False) for c in report["cases"]]
    with open(path, "w") as f:
        f.write(json.dumps(head, indent=1)[:-2] + ',\n "cases": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n")


def _progress(case):
    runs = "runs" if case.get("input_runs_in_ort") else "fails" if "input_runs_in_ort" in case else "?"
    print(f"{case['index']:4d} {case.get('base', '?'):21s} ort {runs:5s} {case['category']:15s} "
          f"{case.get('seconds', 0):5.1f}s  {case.get('kind', '?')}: {case['mutation']}", flush=True)
    if case["category"] not in ("clean error", "valid output"):
        print(f"       {case.get('stderr') or case.get('output_problem') or ''} {case.get('where') or ''}", flush=True)


def print_tables(report, markdown=False):
    from tables import print_rows

    cases = report["cases"]
    shown = [c for c in CATEGORIES if any(x["category"] == c for x in cases)] or list(CATEGORIES[:2])
    header = ["", "cases", "input runs in onnxruntime"] + shown
    for by, title in (("kind", "mutation kind"), ("base", "base model")):
        rows = []
        for key in sorted({x.get(by, "?") for x in cases}):
            group = [x for x in cases if x.get(by, "?") == key]
            rows.append([key, str(len(group)), str(sum(1 for x in group if x.get("input_runs_in_ort")))]
                        + [str(sum(1 for x in group if x["category"] == c)) for c in shown])
        rows.append(["all", str(len(cases)), str(sum(1 for x in cases if x.get("input_runs_in_ort")))]
                    + [str(sum(1 for x in cases if x["category"] == c)) for c in shown])
        print_rows(f"spa prune on mutated ONNX models (seed {report['seed']}), outcomes per {title}",
                   [title] + header[1:], rows, markdown)
    failures = [x for x in cases if x["category"] in FAILURES]
    if failures:
        print_rows("Failures", ["case", "base", "mutation", "category", "message"],
                   [[str(x["index"]), x.get("base", "?"), x["mutation"], x["category"],
                     " ".join(filter(None, [x.get("stderr"), x.get("output_problem"), x.get("where")]))]
                    for x in failures], markdown)
    print(report["summary"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=200, help="mutations (default 200)")
    parser.add_argument("--quick", action="store_true", help=f"the first {QUICK} cases only")
    parser.add_argument("--json", default=OUT, help="results JSON (default: benchmarks/results/robustness.json)")
    parser.add_argument("--workdir", help="keep the mutated models (inputs/caseNNNN.onnx) here")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds one case may take (default 180)")
    parser.add_argument("--table", help="print the tables of a results JSON instead of running")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--case", type=int, help="write this case's mutated model to --workdir (default: a folder in "
                        "the temporary directory) and print its command")
    args = parser.parse_args()
    if args.table:
        with open(args.table) as f:
            print_tables(json.load(f), args.markdown)
        return
    if args.case is not None:
        import onnx

        workdir = os.path.abspath(args.workdir or os.path.join(tempfile.gettempdir(), "spa-robustness-cases"))
        os.makedirs(workdir, exist_ok=True)
        bases = load_bases(workdir)
        base, model, kind, text = make_case(args.seed, args.case, bases)
        path = os.path.join(workdir, f"case{args.case:04d}.onnx")
        onnx.save(model, path)
        feeds = feeds_for(model, bases[base], args.seed * 100003 + args.case)
        print(f"{base}, {kind}: {text}\nspa prune {path} -o slim.onnx {' '.join(PRUNE_ARGS)} "
              f"{' '.join(input_shape_option(feeds))}")
        return
    count = min(args.count, QUICK) if args.quick else args.count
    start = time.perf_counter()
    cases = run_fuzz(args.seed, count, args.workdir, args.timeout, progress=_progress)
    summary = summarise(cases)
    report = {"seed": args.seed, "count": count, "spa prune": " ".join(PRUNE_ARGS),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "seconds": round(time.perf_counter() - start),
              "summary": summary["line"], "counts": summary["counts"],
              "please_report_unrunnable": summary["please_report_unrunnable"], "cases": cases}
    save(report, args.json)
    print_tables(report, args.markdown)
    print(f"wrote {args.json} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
