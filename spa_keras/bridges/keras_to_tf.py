"""Keras 3 model → TFLite flatbuffer or TF SavedModel, directly (no ONNX in between).

Example:

>>> flatbuffer = keras_to_tflite(model, precision="float16")     # doctest: +SKIP
"""

import re

from spa_keras.common.console import quiet
from spa_keras.common.errors import ConversionError, first_line

PRECISIONS = ("float32", "float16", "int8")

# TensorFlow's graph scope names: variables of a layer named `_conv_stem` cannot be captured in a SavedModel or a
# TFLite graph ("'_conv_stem/kernel' is not a valid root scope name")
_TF_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")


def _tf_name(name, taken):
    safe = re.sub(r"[^A-Za-z0-9_.\\/>-]", "_", name)
    safe = safe if _TF_NAME.match(safe) else "l" + safe
    while safe in taken:
        safe += "_"
    taken.add(safe)
    return safe


def tf_safe(model):
    """`model`, or when some layer names are not valid TensorFlow scope names (a leading `_`, common in models
    ported from PyTorch), a copy with those layers renamed and the same weights. Only the exported graph sees the
    new names."""
    import keras

    layers = list(model._flatten_layers(include_self=False))
    if all(_TF_NAME.match(layer.name) for layer in layers):
        return model
    taken = {layer.name for layer in layers}

    def rename(layer):
        name = layer.name if _TF_NAME.match(layer.name) else _tf_name(layer.name, taken)
        if isinstance(layer, keras.Model) and hasattr(layer, "inputs"):  # a model used as a layer: its layers too
            inner = keras.models.clone_model(layer, clone_function=rename)
            return keras.Model(inner.inputs, inner.outputs, name=name)
        return layer.__class__.from_config({**layer.get_config(), "name": name})

    copy = keras.models.clone_model(model, clone_function=rename)
    copy.set_weights(model.get_weights())
    return copy


def apply_precision(converter, precision):
    """Configure a `tf.lite.TFLiteConverter`: float32, float16 weights, or dynamic-range int8 weights."""
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ConversionError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision in ("float16", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # without a dataset: dynamic-range int8
    if precision == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter


def _convert(converter, where):
    try:
        with quiet():
            return converter.convert()
    except Exception as exc:
        raise ConversionError(f"{where}: the TFLite converter failed: {first_line(exc)}") from exc


def keras_to_tflite(model, precision="float32", where="Keras model"):
    """A TFLite flatbuffer (bytes) for a Keras 3 model."""
    import tensorflow as tf

    return _convert(apply_precision(tf.lite.TFLiteConverter.from_keras_model(tf_safe(model)), precision), where)


def savedmodel_to_tflite(path, precision="float32", signature=None):
    """A TFLite flatbuffer (bytes) for a SavedModel directory (its `signature`, default serving_default)."""
    import tensorflow as tf

    keys = [signature] if signature else None
    converter = tf.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=keys)
    return _convert(apply_precision(converter, precision), str(path))


def keras_to_savedmodel(model, directory, where="Keras model"):
    """Export a Keras 3 model as an inference SavedModel (`serving_default` signature) into `directory`."""
    try:
        with quiet():
            tf_safe(model).export(str(directory), format="tf_saved_model")
    except Exception as exc:
        raise ConversionError(f"{where}: SavedModel export failed: {first_line(exc)}") from exc
    return directory
