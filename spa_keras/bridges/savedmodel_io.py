"""TF SavedModel directories: load, describe the serving signature, run, convert to ONNX through tf2onnx.

Example:

>>> onnx_model = savedmodel_to_onnx("exported/")     # doctest: +SKIP
"""

import os

import numpy as np

from spa_keras.common.console import quiet
from spa_keras.common.errors import ConversionError, InputError, first_line
from spa_keras.common.tensors import TensorSpec, natural_key

SIGNATURE = "serving_default"


def _signature(path, signature=None):
    import tensorflow as tf

    if not os.path.exists(os.path.join(str(path), "saved_model.pb")):
        raise InputError(f"{path}: not a SavedModel directory (no saved_model.pb)")
    try:
        with quiet():
            loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise InputError(f"{path}: TensorFlow cannot load this SavedModel: {first_line(exc, 300)}") from exc
    signature = signature or SIGNATURE
    if signature not in loaded.signatures:
        have = ", ".join(f"'{k}'" for k in loaded.signatures) or "none"
        hint = "choose one with --signature (signature=)" if loaded.signatures else \
            "export it with one, e.g. keras model.export(path) or tf.saved_model.save(module, path, signatures=...)"
        raise InputError(f"{path}: the SavedModel has no '{signature}' signature (it has {have}); {hint}")
    return loaded, loaded.signatures[signature]


def input_specs(path, signature=None):
    """The signature's inputs (default serving_default) as `TensorSpec`s."""
    _, fn = _signature(path, signature)
    _, kwargs = fn.structured_input_signature
    return [TensorSpec(name, tuple(spec.shape), spec.dtype.as_numpy_dtype().dtype.name)
            for name, spec in sorted(kwargs.items())]


def run(path, feeds, signature=None):
    """Run the signature (default serving_default) on `{input name: array}`; return `{output name: array}` (sorted
    by name)."""
    _, fn = _signature(path, signature)
    _, kwargs = fn.structured_input_signature
    names = sorted(kwargs)
    if set(names) <= set(feeds):
        args = {n: feeds[n] for n in names}
    elif len(names) == len(feeds):
        args = dict(zip(names, feeds.values()))
    else:
        raise InputError(f"{path}: the SavedModel expects inputs {names}, given {list(feeds)}")
    out = fn(**{n: np.asarray(a, kwargs[n].dtype.as_numpy_dtype) for n, a in args.items()})
    return {k: out[k].numpy() for k in sorted(out, key=natural_key)}



def savedmodel_to_onnx(path, opset=17, signature=None):
    """Convert a SavedModel's signature (default serving_default) to a checked ONNX model through tf2onnx, the
    names tf2onnx generated renumbered in graph order (`onnx_names`: the same directory gives the same bytes)."""
    from tf2onnx import tf_loader
    import tf2onnx

    from spa_keras.bridges import onnx_io, onnx_names
    from spa_keras.bridges.keras_to_onnx import CUSTOM_OP_HANDLERS, _quiet_tf2onnx, stable_merges

    _signature(path, signature)  # a missing signature gets our message, which lists the ones there are
    _quiet_tf2onnx()
    try:
        with quiet(), stable_merges():
            graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
                str(path), None, None, signatures=[signature or SIGNATURE], return_tensors_to_rename=True)
            model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                                      opset=opset, custom_op_handlers=CUSTOM_OP_HANDLERS,
                                                      tensors_to_rename=renames)
    except Exception as exc:
        raise ConversionError(f"{path}: tf2onnx failed: {first_line(exc, 300)}") from exc
    left = onnx_io.unknown_ops(model)
    if left:
        raise ConversionError(f"{path}: tf2onnx left TensorFlow op(s) it cannot convert: "
                              f"{', '.join(sorted({op for op, _ in left}))} (e.g. node {left[0][1]})")
    onnx_names.canonicalize(model, keep=[renames.get(name, name) for name in inputs + outputs])
    onnx_io.check(model, where=f"ONNX from {path}")
    return model
