"""`KerasSource`: the format adapter of Keras 3 models (Functional and Sequential, keras-hub models included).

Loading refuses Lambda layers and names unregistered custom classes (`bridges.keras_io`); the front-end describes
every layer in ONNX ops on channels-last tensors with parameters that view the layers' own variables
(`frontend/`); the surgery rebuilds the model with `clone_model` at the new widths (`surgery/`); writes go through
TensorFlow (TFLite, SavedModel), tf2onnx (ONNX) or `model.save` (.keras, .h5).

Example:

>>> source = KerasSource(model)                              # doctest: +SKIP
>>> slim = source.slim(analyze_graph(source.graph), removed)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spa_keras.bridges import keras_io
from spa_keras.common import files
from spa_keras.common.tensors import TensorSpec
from spa_keras.formats.base import Feeds, Source, WriteJob

if TYPE_CHECKING:
    from spa_keras.analysis.cost import Counts
    from spa_keras.analysis.graph import SPAGraph
    from spa_keras.analysis.groups import Analysis
    from spa_keras.formats.keras.activations import KerasActivations


def is_keras_model(obj: Any) -> bool:
    """Whether `obj` is a keras.Model (Keras is imported only when it is loaded already)."""
    import sys

    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


class KerasSource(Source):
    """A keras.Model; `KerasSource.open(path)` loads a .keras or .h5 file."""

    kind = files.KERAS
    framework = "keras"
    runtime = "tensorflow"

    def __init__(self, model: Any, name: str | None = None, input_shapes: dict | None = None) -> None:
        super().__init__(model, name or f"Keras model '{model.name}'", input_shapes)
        self.layer_outputs: dict[int, str] = {}  # id(layer or input tensor) -> graph name of its first output

    def like(self, model: Any) -> KerasSource:
        """The source of another model of the same inputs (a clone), at the same input shapes."""
        return KerasSource(model, input_shapes=self.input_shapes)

    @classmethod
    def open(cls, path: str, input_shapes: dict | None = None) -> KerasSource:
        source = cls(keras_io.load(path), str(path), input_shapes)
        source.kind = files.model_kind(str(path))  # keras or h5
        return source

    @property
    def specs(self) -> list[TensorSpec]:
        return keras_io.input_specs(self.model)

    def run(self, feeds: Feeds) -> Feeds:
        return keras_io.run(self.model, feeds)

    def require_describable(self) -> None:
        from spa_keras.formats.keras.frontend import require_graph

        require_graph(self.model)

    def describe(self, input_shapes: dict[str, tuple]) -> SPAGraph:
        from spa_keras.formats.keras.frontend import describe_model

        graph, self.layer_outputs = describe_model(self.model, input_shapes)
        return graph

    # ---- surgery -------------------------------------------------------------------------------------------------

    def slim(self, analysis: Analysis, removed: np.ndarray, updates: dict | None = None) -> Any:
        from spa_keras.formats.keras.surgery import KerasSurgery

        return KerasSurgery(analysis, removed, updates).apply()

    def mask_in_place(self, analysis: Analysis, removed: np.ndarray, updates: dict | None = None) -> Any:
        from spa_keras.formats.keras.surgery import mask_keras

        return mask_keras(analysis, removed, updates)

    def variable_masks(self, analysis: Analysis, removed: np.ndarray) -> list[tuple[Any, dict[int, np.ndarray]]]:
        """(variable, {axis: keep}) of every Keras variable that loses positions (config constants left out)."""
        from spa_keras.formats.keras.surgery import SourceMasks
        from spa_keras.formats.keras.view import view_of

        masks = SourceMasks(analysis, removed).masks
        out = []
        for param, axes in masks.items():
            variable = view_of(analysis.graph.params[param]).variable
            if variable is not None:
                out.append((variable, axes))
        return out

    # ---- writing -------------------------------------------------------------------------------------------------

    def write(self, job: WriteJob) -> None:
        from spa_keras.bridges import onnx_io, tflite_io
        from spa_keras.bridges.keras_to_tf import keras_to_savedmodel, keras_to_tflite
        from spa_keras.formats.writing import write_bytes

        if job.kind == files.ONNX:
            from spa_keras.bridges.keras_to_onnx import keras_to_onnx

            job.say("converting with tf2onnx")
            onnx_model = keras_to_onnx(self.model)
            job.verify(onnx_io.run(onnx_model, job.feeds), "onnxruntime")
            onnx_io.save(onnx_model, job.output)
        elif job.kind == files.TFLITE:
            job.say(f"converting to TFLite ({job.precision})")
            flatbuffer = keras_to_tflite(self.model, job.precision)
            job.verify(tflite_io.run(flatbuffer, job.feeds), f"tflite {job.precision}")
            write_bytes(flatbuffer, job.output)
        elif job.kind == files.SAVEDMODEL:
            from spa_keras.bridges import savedmodel_io

            job.say("exporting a SavedModel")
            with files.atomic_output(job.output) as tmp:
                keras_to_savedmodel(self.model, tmp)
                job.verify(savedmodel_io.run(tmp, job.feeds), "tf savedmodel")
        else:
            with files.atomic_output(job.output) as tmp:
                self.model.save(tmp)
                job.verify(keras_io.run(keras_io.load_fresh(tmp), job.feeds), f"keras ({job.kind})")

    # ---- what algorithms ask of the model --------------------------------------------------------------------------

    def activations(self) -> KerasActivations:
        from spa_keras.formats.keras.activations import KerasActivations

        return KerasActivations(self)

    def trainable_model(self, criterion: str | None) -> Any:
        return self.model

    def params_of_variables(self, per_variable: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from spa_keras.formats.keras.view import view_of

        out = {}
        for name, param in self.graph.params.items():
            variable = getattr(param.handle, "variable", None)
            if variable is not None and variable.path in per_variable:
                out[name] = view_of(param).view(per_variable[variable.path])
        return out

    def counts(self) -> Counts:
        from spa_keras.formats.keras.counts import count_keras

        return count_keras(self.model)
