"""`SavedModelSource`: the format adapter of TensorFlow SavedModel directories (one serving signature).

A SavedModel has no layer graph to read, so it is analysed and cut as its tf2onnx export (`proto`, names made
canonical by the bridge so that the same directory gives the same graph, and plans replay); the slim model is ONNX.
Written as it is, it goes to TFLite with TensorFlow's own converter, to ONNX with tf2onnx and to Keras through ONNX.

Example:

>>> source = SavedModelSource("exported/")                    # doctest: +SKIP
"""

from __future__ import annotations

import functools
from typing import Any

from spa_keras.bridges import savedmodel_io
from spa_keras.common import files
from spa_keras.common.errors import InputError
from spa_keras.common.tensors import TensorSpec
from spa_keras.formats.base import Feeds, WriteJob
from spa_keras.formats.onnx.source import OnnxSource, onnx_to_keras_file


class SavedModelSource(OnnxSource):
    """A SavedModel directory and the signature read (default serving_default)."""

    kind = files.SAVEDMODEL
    framework = "tensorflow"

    def __init__(self, path: str, signature: str | None = None, input_shapes: dict | None = None) -> None:
        super().__init__(str(path), str(path), input_shapes)
        self.signature = signature

    @functools.cached_property
    def proto(self) -> Any:
        return savedmodel_io.savedmodel_to_onnx(self.model, signature=self.signature)

    @property
    def specs(self) -> list[TensorSpec]:
        return savedmodel_io.input_specs(self.model, self.signature)

    def run(self, feeds: Feeds) -> Feeds:
        return savedmodel_io.run(self.model, feeds, self.signature)

    def write(self, job: WriteJob) -> None:
        from spa_keras.bridges import onnx_io, tflite_io
        from spa_keras.bridges.keras_to_tf import savedmodel_to_tflite
        from spa_keras.formats.writing import write_bytes

        if job.kind == files.TFLITE:
            job.say(f"converting to TFLite ({job.precision})")
            flatbuffer = savedmodel_to_tflite(self.model, job.precision, self.signature)
            job.verify(tflite_io.run(flatbuffer, job.feeds), f"tflite {job.precision}")
            write_bytes(flatbuffer, job.output)
            return
        if job.kind == files.SAVEDMODEL:
            raise InputError(f"{job.output}: the input is a SavedModel already; write .onnx, .tflite or .keras")
        job.say("converting with tf2onnx")
        onnx_model = self.proto
        job.verify(onnx_io.run(onnx_model, job.feeds), "onnxruntime")
        if job.kind == files.ONNX:
            onnx_io.save(onnx_model, job.output)
        else:
            onnx_to_keras_file(onnx_model, job)
