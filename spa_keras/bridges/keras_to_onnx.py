"""Keras 3 model → ONNX through tf2onnx (opset 17, dynamic batch, the Keras input and output names).

Two fixes that Keras 3 graphs need (stack notes §1):
- GELU with `approximate=False` lowers to `tf.math.erfc`, for which tf2onnx has no handler: we give it `1 - Erf`.
- Keras wraps grouped convolutions (`Conv2D(groups>1)`, ConvNeXt's depthwise convs) in an XLA-compiled
  `tf.function`, which tf2onnx does not inline: while tracing we use a plain `tf.nn.convolution` instead.
tf2onnx does not raise when TF ops are left in the graph (`continue_on_error`), so the result is checked here.
The names tf2onnx makes carry a process-wide counter and which of two equal constants it keeps follows its passes'
hash order: `stable_merges` fixes the second, `onnx_names.canonicalize` renumbers the first in graph order, so the
same model gives the same ONNX bytes in every run and plans made on the export replay.

Example:

>>> onnx_model = keras_to_onnx(keras_model)      # doctest: +SKIP
"""

import contextlib
import logging

import numpy as np

from spa_keras.bridges import onnx_io, onnx_names
from spa_keras.common.errors import ConversionError, first_line

OPSET = 17


def _erfc_handler(ctx, node, name, args):
    from tf2onnx import utils

    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
    one = ctx.make_const(utils.make_name(node.name + "_one"), np.array(1.0, dtype=np.float32))
    node.type = "Sub"
    node.domain = ""
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


CUSTOM_OP_HANDLERS = {"Erfc": (_erfc_handler, [])}


@contextlib.contextmanager
def no_xla_grouped_conv():
    """Trace Keras convolutions without the XLA wrapper Keras puts around grouped ones (conversion only)."""
    import tensorflow as tf
    import keras.src.backend.tensorflow.nn as knn
    from keras.src import backend

    original = knn.conv

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        data_format = backend.standardize_data_format(data_format)
        return tf.nn.convolution(inputs, kernel, strides, padding.upper(),
                                 data_format=knn._convert_data_format(data_format, len(inputs.shape)),
                                 dilations=dilation_rate)

    knn.conv = conv
    try:
        yield
    finally:
        knn.conv = original


@contextlib.contextmanager
def stable_merges():
    """Let tf2onnx's merging of duplicate nodes keep the same node in every run (conversion only).

    Of equal constants (two Relu6 bounds, two Tensordot axes, two zero biases) tf2onnx keeps the first in its node
    list, an order that follows its counter and Python's hash seed, so the name the merged constant keeps changed
    from run to run. Here the duplicates are first put in order of their names without counters (tf2onnx's own
    rule, the node with the most outputs, still comes before that order), and `onnx_names.canonicalize`
    renumbers the counter the kept name holds.
    """
    from tf2onnx import optimizer
    from tf2onnx.optimizer.merge_duplicated_nodes_optimizer import MergeDuplicatedNodesOptimizer

    from spa_keras.bridges.onnx_names import counters_removed

    class StableMerge(MergeDuplicatedNodesOptimizer):
        def _merge_nodes_that_are_duplicated(self, nodes_to_process, graph):
            nodes_to_process.sort(key=lambda node: (counters_removed(node.name), node.name))
            super()._merge_nodes_that_are_duplicated(nodes_to_process, graph)  # (its sort by outputs is stable)

    registry = optimizer._get_optimizers()
    original = registry.get("merge_duplication")
    if original is None:  # another tf2onnx: nothing to replace
        yield
        return
    registry["merge_duplication"] = StableMerge
    try:
        yield
    finally:
        registry["merge_duplication"] = original


def _quiet_tf2onnx():
    import tf2onnx

    tf2onnx.logging.set_level(logging.ERROR)
    for name in ("tf2onnx", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)


def keras_to_onnx(model, opset=OPSET, where="Keras model"):
    """Convert a Keras 3 Functional or Sequential model to a checked `onnx.ModelProto`."""
    import tensorflow as tf
    import tf2onnx

    from spa_keras.bridges import keras_io

    _quiet_tf2onnx()
    if not getattr(model, "inputs", None):
        raise ConversionError(f"{where}: the model has no defined inputs (a subclassed model that was never built); "
                              "build it on an input, or wrap it in a Functional keras.Model")
    signature = tuple(tf.TensorSpec((None,) + tuple(s.shape[1:]), s.dtype, name=s.name)
                      for s in keras_io.input_specs(model))
    try:
        with no_xla_grouped_conv(), stable_merges():
            onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset,
                                                       custom_op_handlers=CUSTOM_OP_HANDLERS)
    except Exception as exc:
        first = first_line(exc)
        raise ConversionError(f"{where}: tf2onnx failed: {first}") from exc
    left = onnx_io.unknown_ops(onnx_model)
    if left:
        ops = sorted({op for op, _ in left})
        nodes = ", ".join(name for _, name in left[:3])
        raise ConversionError(f"{where}: tf2onnx left {len(left)} TensorFlow op(s) it cannot convert: "
                              f"{', '.join(ops)} (e.g. node {nodes}); replace the layers that produce them or "
                              "convert through TFLite instead (-o model.tflite)")
    onnx_io.rename_outputs(onnx_model, keras_io.output_names(model))
    onnx_names.canonicalize(onnx_model, keep=[s.name for s in signature] + keras_io.output_names(model))
    onnx_io.check(onnx_model, where=f"ONNX from {where}")
    return onnx_model
