"""Data-free BatchNorm targets of an ONNX model: the graph rebuilt as a differentiable Keras 3 model (the native
ONNX -> Keras rebuild, `spa_keras.bridges.onnx_to_keras`) whose BatchNormalization inputs OBSPA's synthetic inputs
are optimised through (`spa_keras.compute.distill`), with the statistics read from the graph.

The probe takes the model's inputs in ONNX's shapes (NCHW) and gives each BatchNormalization node's input in the
layout the rebuild computed it in (channels-last for what convolutions produce); each `NormTarget` reduces over
every axis but the one ONNX's channel axis landed on. SavedModels (tf2onnx) and MXNet models (mxnet.onnx) reach
OBSPA as their ONNX export, so they are probed the same way.

Folded BatchNorm. PyTorch eval exports and tf2onnx fold BatchNorm into the convolution before it: W' = γW/σ,
b' = β − γμ/σ. The folded pre-activation had, on the training data, per-channel mean β and standard deviation |γ|,
but only W' and b' are left: for any input distribution the pre-activation's moments are W'm + b' and W'ΣW'ᵀ, so
the folded weights constrain no statistic of the training data and there is nothing to match. The BatchNorm nodes
that remain are probed, and the model's class output (its first output, [batch, classes]) is probed too, so that
the inputs are also pushed towards the classes (DeepInversion); a graph with no BatchNorm left is probed for its
classes alone, with DeepInversion's image prior keeping the inputs smooth images (`spa_keras.compute.distill`), and
a warning that asks for calibration data; one with neither gets no probe (Gaussian inputs). Measured at -30 / -50%
FLOPs on the zoo's PyTorch CNN with BatchNorm folded (88.0% on 2,000 test images): classes and image prior
84.4 / 79.8%, classes alone 64.0 / 32.3% (adversarial noise, far from any image), Gaussian inputs 16.3% at -30%, 256
real images 87.5% at -30%, L1 33.9 / 11.8%. With BatchNorm kept, the probe takes the orientation classifier from
50.7% (identity) to 94.2%; the real classifiers with BatchNorm folded stayed at chance with Gaussian inputs
(orientation 27.8%, PP-OCR 49.8%) and the identity (27.5%, 50.0%).

Example:

>>> probe = onnx_norm_probe(source.proto, source.input_shapes)     # doctest: +SKIP
>>> probe.targets[0].reduce                                          # doctest: +SKIP
(0, 1, 2)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np

from spa_keras.common.errors import first_line
from spa_keras.compute.distill import NormTarget

# what a graph with no BatchNormalization left is told (the module docstring gives the measurements behind it)
FOLDED_NOTE = ("no BatchNormalization node left (folded into the convolutions): the training statistics cannot be "
               "read back from folded weights, so the Hessians are measured on Gaussian inputs, which measured no "
               "better than chance on real folded classifiers; give calibration= data (a few hundred inputs of the "
               "kind the model reads) to reconstruct")
# what a graph without BatchNormalization but with a class output is told
CLASSES_NOTE = ("no BatchNormalization node left (folded into the convolutions): the synthetic inputs are optimised "
                "for the model's classes and to be smooth images, which reconstructs less than real data does; give "
                "calibration= data (a few hundred inputs of the kind the model reads) to reconstruct better")


@dataclasses.dataclass
class NormProbe:
    """A Keras model from the ONNX inputs to the BatchNormalization inputs (`probe([x], training=False)`), the
    statistics they should have, and the BatchNormalization nodes they belong to (graph order)."""

    probe: Callable
    targets: list[NormTarget]
    nodes: list[str]


def _traced_once(model: Any) -> Callable:
    """`model(inputs, training=False)` as one TensorFlow graph, traced now for any batch size: the optimisation
    traces its step anew for each batch and only calls this graph there, so that its time budget goes to steps
    rather than to tracing every layer (with about a hundred layers, seconds of a 30 s budget per batch)."""
    import tensorflow as tf

    spec = [tf.TensorSpec((None,) + tuple(t.shape[1:]), tf.float32) for t in model.inputs]
    graph = tf.function(lambda inputs: model(inputs, training=False), input_signature=[spec])
    graph.get_concrete_function()
    return lambda inputs, training=False: graph(list(inputs))


def batchnorm_nodes(model: Any) -> list[Any]:
    """The inference-mode BatchNormalization nodes of an ONNX model (graph order)."""
    out = []
    for node in model.graph.node:
        if node.op_type != "BatchNormalization" or node.domain not in ("", "ai.onnx"):
            continue
        training = any(a.i for a in node.attribute if a.name == "training_mode")
        if not training and not any(node.output[1:]):  # running statistics as outputs: a training graph
            out.append(node)
    return out


def onnx_norm_probe(model: Any, input_shapes: Mapping[Any, Sequence[int]]) -> NormProbe | None:
    """The probe of the BatchNormalization nodes of `model` at `input_shapes` ({input: shape at batch 1}), or None
    (with a warning) when it has none or the rebuild refuses it; then OBSPA's inputs stay Gaussian noise.

    Args:
        model: the ONNX model (`onnx.ModelProto`).
        input_shapes: {input name: shape, batch included} to rebuild at (free dimensions filled).
    """
    norms = batchnorm_nodes(model)
    try:
        import keras

        from spa_keras.bridges.onnx_to_keras import Builder  # the rebuild's package fills its converters

        builder = Builder(model, input_shapes)
        rebuilt = builder.build("obspa_probe")
        outputs, targets, names = [], [], []
        for node in norms:
            source = node.input[0]
            if source not in builder.tensors:  # computed from constants alone: nothing to optimise
                continue
            mean, var = (np.asarray(builder.consts[node.input[i]], np.float32) for i in (3, 4))
            epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            layout = builder.layouts[source]
            channel = layout.index(1)
            outputs.append(builder.tensor(source))
            targets.append(NormTarget(tuple(a for a in range(len(layout)) if a != channel), mean,
                                      (var + np.float32(epsilon)).astype(np.float32)))
            names.append(node.name or node.output[0])
        classes = [out for out in rebuilt.outputs[:1] if len(out.shape) == 2 and (out.shape[-1] or 0) >= 2]
        if not outputs and not classes:
            warnings.warn(f"OBSPA: {FOLDED_NOTE}", stacklevel=3)
            return None
        if not outputs:
            warnings.warn(f"OBSPA: {CLASSES_NOTE}", stacklevel=3)
        model = keras.Model(rebuilt.inputs, outputs + classes, name="obspa_norm_probe")
        probe = _traced_once(model)
    except Exception as exc:  # a rebuild refused (an op without a Keras layer), or a Keras error: never fatal
        warnings.warn(f"OBSPA: the ONNX model does not rebuild as a Keras model ({first_line(exc)}), so inputs "
                      "cannot be optimised to its BatchNorm statistics; the Hessians are measured on Gaussian "
                      "inputs (give calibration= data for better ones)", stacklevel=3)
        return None
    return NormProbe(probe, targets, names)
