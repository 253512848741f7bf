"""ONNX → TF SavedModel and TFLite through onnx2tf (in a subprocess), always on a copy of the input.

onnx2tf assumes NCHW inputs and moves their channels last. Graphs from tf2onnx already take NHWC (or [N, T, C])
inputs; for those the input shape is kept as it is (`-kat`). We keep every input of rank ≥ 3 unless it feeds a
channel-first op (Conv, pooling, BatchNormalization, ...) directly: those are NCHW, and TFLite users want NHWC.

onnx2tf runs in its own process: it imports tf_keras (Keras 2) and prints a great deal; a crash or a hang there
cannot take the caller with it.

Example:

>>> result = onnx_to_tf(onnx_model, workdir)       # doctest: +SKIP
>>> result.tflite["float32"], result.savedmodel    # doctest: +SKIP
"""

import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import onnx

from spa_keras.common.console import debug_enabled
from spa_keras.common.errors import ConversionError

# ops whose first input is channel-first: an input feeding one directly is NCHW
CHANNEL_FIRST_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                     "LpPool", "BatchNormalization", "InstanceNormalization", "LRN", "SpaceToDepth", "DepthToSpace"}
TIMEOUT_S = 1800


@dataclasses.dataclass
class TFModels:
    """What onnx2tf produced: a SavedModel directory, TFLite files by precision, and the inputs it made NHWC."""

    savedmodel: str
    tflite: dict
    channels_last_inputs: list

    def feeds_for_tf(self, feeds):
        """The ONNX feeds in the converted model's layout (NCHW inputs → NHWC)."""
        return {k: (np.moveaxis(v, 1, -1) if k in self.channels_last_inputs else v) for k, v in feeds.items()}


def channel_first_inputs(model):
    """Names of graph inputs of rank ≥ 3 that feed a channel-first op directly."""
    inits = {i.name for i in model.graph.initializer}
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    return [i.name for i in model.graph.input
            if i.name not in inits and len(i.type.tensor_type.shape.dim) >= 3
            and any(op in CHANNEL_FIRST_OPS for op in consumers.get(i.name, []))]


def with_static_inputs(model, shapes):
    """A copy of `model` whose inputs have the non-batch dimensions of `shapes` (name -> shape); batch stays free.

    onnx2tf needs static spatial sizes; some exporters also write invalid free dimensions (dim_value -1).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for inp in model.graph.input:
        if inp.name not in shapes:
            continue
        dims = inp.type.tensor_type.shape.dim
        for i, (dim, size) in enumerate(zip(dims, shapes[inp.name])):
            dim.Clear()
            if i == 0:
                dim.dim_param = "batch"
            else:
                dim.dim_value = int(size)
    return model


def onnx_to_tf(model, workdir, precisions=("float32",), input_shapes=None):
    """Convert `model` (ModelProto) inside `workdir`; return `TFModels`. Raises `ConversionError` on failure.

    `input_shapes` (name -> shape) fixes free non-batch input dimensions, which onnx2tf cannot handle.
    """
    os.makedirs(workdir, exist_ok=True)
    src = os.path.join(workdir, "model.onnx")
    model = with_static_inputs(model, input_shapes or {})
    for node in model.graph.node:  # onnx2tf uses node names as TF scopes, which allow only [A-Za-z0-9_.\/>-]
        node.name = re.sub(r"[^A-Za-z0-9_.\\/>-]", "_", node.name)
    onnx.save(model, src)  # a single-file copy: onnx2tf and onnxsim rewrite their input in place
    out = os.path.join(workdir, "tf")
    inits = {i.name for i in model.graph.initializer}
    nchw = channel_first_inputs(model)
    keep = [i.name for i in model.graph.input
            if i.name not in inits and i.name not in nchw and len(i.type.tensor_type.shape.dim) >= 3]
    args = ["-i", src, "-o", out, "-osd", "-v", "debug" if debug_enabled() else "error"]
    if keep:
        args += ["-kat", *keep]
    if any(n.op_type == "Erf" for n in model.graph.node):
        args += ["-rtpo", "Erf"]  # GELU without the Flex delegate
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # onnx2tf finds onnxsim on PATH
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cmd = [sys.executable, "-c", "import sys, onnx2tf; sys.exit(onnx2tf.main())", *args]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=not debug_enabled(), text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"onnx2tf did not finish within {TIMEOUT_S} s") from exc
    tflite32 = os.path.join(out, "model_float32.tflite")
    if proc.returncode != 0 or not os.path.exists(os.path.join(out, "saved_model.pb")) or not os.path.exists(tflite32):
        raise ConversionError(f"onnx2tf failed (exit {proc.returncode}): {_last_error(proc.stderr, proc.stdout)}")
    tflite = {"float32": tflite32}
    if "float16" in precisions:
        tflite["float16"] = os.path.join(out, "model_float16.tflite")
    if "int8" in precisions:
        from spa_keras.bridges.keras_to_tf import savedmodel_to_tflite

        path = os.path.join(out, "model_dynamic_range_int8.tflite")
        with open(path, "wb") as f:
            f.write(savedmodel_to_tflite(out, "int8"))
        tflite["int8"] = path
    return TFModels(out, tflite, nchw)


def _last_error(*texts):
    """The most telling line of onnx2tf's output: the exception, with the ONNX node it names."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", l).strip() for t in texts if t for l in t.splitlines() if l.strip()]
    exceptions = [l for l in lines if re.match(r"^\w+(Error|Exception):", l)]
    nodes = [l.split(":", 1)[1].strip() for l in lines if l.startswith("ERROR: onnx_op_name:")]
    message = (exceptions or [l for l in lines if "error" in l.lower()] or lines or ["no output"])[-1][:300]
    return message + (f" (at ONNX node {nodes[-1]})" if nodes else "")
