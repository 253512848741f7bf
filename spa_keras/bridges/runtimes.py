"""A model compiled for one inference runtime at fixed inputs, as a callable that runs it once: what latency
measurements time.

- onnxruntime: an ONNX model (a Keras model goes through tf2onnx first) in a CPU session with `threads` intra-op
  threads whose idle workers sleep instead of spinning.
- tflite: a Keras model converted by TensorFlow's TFLite converter, run by LiteRT's interpreter (XNNPACK).
- tensorflow: a `tf.function` of the Keras model.

Example:

>>> run = runner(model, "onnxruntime", [x], threads=2)    # doctest: +SKIP
>>> run()                                                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

RUNTIMES = ("onnxruntime", "tflite", "tensorflow")


def runner(model: Any, runtime: str, feeds: list[np.ndarray], threads: int, keras_model: bool) -> Callable[[], Any]:
    """A callable that runs `model` once on `feeds` (one array per input, in order) on `runtime`; `keras_model`
    says whether `model` is a keras.Model (else an ONNX model, for onnxruntime only)."""
    if runtime == "onnxruntime":
        if keras_model:
            from spa_keras.bridges.keras_to_onnx import keras_to_onnx

            model = keras_to_onnx(model)
        return _onnxruntime(model, feeds, threads)
    return _tflite(model, feeds, threads) if runtime == "tflite" else _tensorflow(model, feeds)


def _onnxruntime(model: Any, feeds: list[np.ndarray], threads: int) -> Callable[[], Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # idle worker threads sleep instead of spinning: two sessions timed in turns (and anything else on the
    # machine) otherwise lose the cores to each other's spinning, which adds the same time to both models and
    # pulls measured speed-ups towards 1 (MobileNetV2 at batch 16: 1.6x spinning, 1.8-2.0x not; kernels 1.9x)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: x for i, x in zip(session.get_inputs(), feeds)}
    return lambda: session.run(None, feed)


def _tflite(model: Any, feeds: list[np.ndarray], threads: int) -> Callable[[], Any]:
    from ai_edge_litert.interpreter import Interpreter

    from spa_keras.bridges.keras_to_tf import keras_to_tflite

    interpreter = Interpreter(model_content=keras_to_tflite(model), num_threads=threads)
    details = interpreter.get_input_details()
    for d, x in zip(details, feeds):
        interpreter.resize_tensor_input(d["index"], x.shape)
    interpreter.allocate_tensors()

    def run() -> None:
        for d, x in zip(details, feeds):
            interpreter.set_tensor(d["index"], x)
        interpreter.invoke()
    return run


def _tensorflow(model: Any, feeds: list[np.ndarray]) -> Callable[[], Any]:
    import tensorflow as tf

    call = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
    tensors = [tf.constant(x) for x in feeds]
    return lambda: tf.nest.map_structure(lambda t: t.numpy(), call(*tensors))
