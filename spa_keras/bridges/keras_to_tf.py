"""Keras 3 model → TFLite flatbuffer or TF SavedModel, directly (no ONNX in between).

Example:

>>> flatbuffer = keras_to_tflite(model, precision="float16")     # doctest: +SKIP
"""

from spa_keras.console import quiet
from spa_keras.errors import ConversionError, first_line

PRECISIONS = ("float32", "float16", "int8")


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
        first = first_line(exc)
        raise ConversionError(f"{where}: the TFLite converter failed: {first}") from None


def keras_to_tflite(model, precision="float32", where="Keras model"):
    """A TFLite flatbuffer (bytes) for a Keras 3 model."""
    import tensorflow as tf

    return _convert(apply_precision(tf.lite.TFLiteConverter.from_keras_model(model), precision), where)


def savedmodel_to_tflite(path, precision="float32"):
    """A TFLite flatbuffer (bytes) for a SavedModel directory."""
    import tensorflow as tf

    return _convert(apply_precision(tf.lite.TFLiteConverter.from_saved_model(str(path)), precision), str(path))


def keras_to_savedmodel(model, directory, where="Keras model"):
    """Export a Keras 3 model as an inference SavedModel (`serving_default` signature) into `directory`."""
    try:
        with quiet():
            model.export(str(directory), format="tf_saved_model")
    except Exception as exc:
        first = first_line(exc)
        raise ConversionError(f"{where}: SavedModel export failed: {first}") from None
    return directory
