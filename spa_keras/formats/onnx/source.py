"""`OnnxSource`: the format adapter of ONNX models (files from PyTorch, Paddle, tf2onnx, ... and in-memory protos).

The front-end reads the ModelProto as it is (initializers, Constant nodes and constant-folded layout ops become
parameters, `frontend.py`); the surgery slices initializers and rewrites what ops say about channel counts
(`surgery/`); writes keep the ONNX (.onnx), rebuild it natively in Keras 3 (.keras/.h5) or go through onnx2tf
(TFLite, SavedModel). Models exported from other formats (SavedModels through tf2onnx, Keras with `via="onnx"`,
MXNet through mxnet.onnx) are analysed and cut as this ONNX export: `proto`.

Example:

>>> source = OnnxSource.open("resnet18.onnx")                 # doctest: +SKIP
>>> slim = source.slim(analyze_graph(source.graph), removed)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from spa_keras.bridges import onnx_io
from spa_keras.common import files
from spa_keras.common.errors import InputError
from spa_keras.common.tensors import TensorSpec, random_batch
from spa_keras.formats.base import Feeds, Source, WriteJob

if TYPE_CHECKING:
    import numpy as np

    from spa_keras.analysis.cost import Counts
    from spa_keras.analysis.graph import SPAGraph
    from spa_keras.analysis.groups import Analysis
    from spa_keras.formats.onnx.activations import OnnxActivations


def is_onnx_model(obj: Any) -> bool:
    return type(obj).__name__ == "ModelProto" and hasattr(obj, "graph")


class OnnxSource(Source):
    """An onnx.ModelProto; `OnnxSource.open(path)` loads a file."""

    kind = files.ONNX
    framework = "onnxruntime"
    runtime = "onnxruntime"

    def __init__(self, model: Any, name: str = "ONNX model", input_shapes: dict | None = None,
                 repair: bool = False) -> None:
        super().__init__(model, name, input_shapes)
        self.repair = repair  # a file onnx.checker rejects but onnxruntime runs is put right before pruning

    @classmethod
    def open(cls, path: str, input_shapes: dict | None = None) -> OnnxSource:
        return cls(onnx_io.load(str(path)), str(path), input_shapes, repair=True)

    @property
    def proto(self) -> Any:
        """The ONNX model the graph describes and surgery cuts."""
        return self.model

    @functools.cached_property
    def session(self) -> Any:
        """An onnxruntime session of the model as given (checked first)."""
        return onnx_io.check(self.proto, where=self.name)

    @property
    def specs(self) -> list[TensorSpec]:
        return onnx_io.input_specs(self.proto)

    @property
    def graph_specs(self) -> list[TensorSpec]:
        return onnx_io.input_specs(self.proto)

    @property
    def analysed_model(self) -> Any:
        return self.proto

    def run(self, feeds: Feeds) -> Feeds:
        return onnx_io.run(self.session, feeds)

    def describe(self, input_shapes: dict[str, tuple]) -> SPAGraph:
        from spa_keras.formats.onnx.frontend import from_onnx

        if self.repair:
            self.model, _ = onnx_io.repaired(self.model, where=self.name)
            self.repair = False
        onnx_io.refuse_quantized(self.proto, self.name)
        # a model onnxruntime cannot run is the input's fault, said before the engine could stumble over it
        onnx_io.require_runs(self.proto, random_batch(self.graph_specs, input_shapes, batch=1), where=self.name)
        return from_onnx(self.proto, input_shapes)

    def counts(self) -> Counts:
        from spa_keras.analysis.cost import Counts, graph_macs, graph_params
        from spa_keras.formats.onnx.frontend import from_onnx

        graph = from_onnx(self.proto)  # free dimensions as 1, whatever the input shapes
        return Counts(graph_params(graph), 2 * graph_macs(graph))

    # ---- surgery -------------------------------------------------------------------------------------------------

    def slim(self, analysis: Analysis, removed: np.ndarray, updates: dict | None = None) -> Any:
        return self.slim_analysed(analysis, removed, updates)

    def slim_analysed(self, analysis: Analysis, removed: np.ndarray, updates: dict | None = None) -> Any:
        from spa_keras.formats.onnx.surgery import prune_onnx

        return prune_onnx(analysis, removed, updates)

    def masked(self, analysis: Analysis, removed: np.ndarray, updates: dict | None = None) -> Any:
        """A copy with the removed channels zeroed and `updates` written; shapes unchanged (not validated)."""
        from spa_keras.formats.onnx.surgery import mask_onnx

        return mask_onnx(analysis, removed, updates)

    # ---- writing -------------------------------------------------------------------------------------------------

    def write(self, job: WriteJob) -> None:
        write_onnx(self.proto, job)

    def activations(self) -> OnnxActivations:
        from spa_keras.formats.onnx.activations import OnnxActivations

        return OnnxActivations(self)


def write_onnx(model: Any, job: WriteJob, verified: bool = False) -> None:
    """An ONNX model to .onnx, .keras/.h5 (native rebuild), .tflite or a SavedModel (onnx2tf); `verified`: the
    ONNX model itself was checked against the source already."""
    if job.kind == files.ONNX:
        if not verified:  # as the source ran: an optimised session rounds differently (fused Conv+BatchNorm)
            job.verify(onnx_io.run(onnx_io.session(model, job.output, optimize=False), job.feeds), "onnxruntime")
        onnx_io.save(model, job.output)
        return
    if job.kind in (files.KERAS, files.H5):
        onnx_to_keras_file(model, job)
        return
    if job.kind not in (files.TFLITE, files.SAVEDMODEL):
        raise InputError(f"{job.output}: an ONNX model converts to .tflite, .keras, a SavedModel directory or .onnx")
    _onnx_to_tf(model, job)


def onnx_to_keras_file(model: Any, job: WriteJob) -> None:
    """The native ONNX -> Keras 3 rebuild, checked before and after saving. The saved file is loaded back as a
    fresh process would (`keras_io.load_fresh`): the rebuild registered ConstantAffine in this process, which a
    file must not rely on. A file holding ConstantAffine layers gets a note: plain Keras loads it only after the
    module that registers them is imported."""
    import warnings

    from spa_keras.bridges import keras_io
    from spa_keras.bridges.onnx_to_keras import ConstantAffine, onnx_to_keras

    job.say("rebuilding as a Keras 3 model")
    keras_model = onnx_to_keras(model, {name: array.shape for name, array in job.feeds.items()})
    job.verify(keras_io.run(keras_model, job.feeds), "keras (rebuilt from ONNX)")
    with files.atomic_output(job.output) as tmp:
        keras_model.save(tmp)
        job.verify(keras_io.run(keras_io.load_fresh(tmp), job.feeds), f"keras ({job.kind})")
    custom = [layer.name for layer in keras_model.layers if isinstance(layer, ConstantAffine)]
    if custom:
        warnings.warn(f"{job.output} holds spa-keras's ConstantAffine layer ({', '.join(custom[:3])}"
                      f"{' ...' if len(custom) > 3 else ''}: a constant no standard Keras layer adds): spa loads it "
                      "as it is; keras.saving.load_model after `import spa_keras.bridges.onnx_to_keras`", stacklevel=2)


def _onnx_to_tf(model: Any, job: WriteJob) -> None:
    from spa_keras.bridges import savedmodel_io, tflite_io
    from spa_keras.bridges.onnx_to_tf import onnx_to_tf
    from spa_keras.formats.writing import write_bytes

    workdir = tempfile.mkdtemp(prefix="spa-onnx2tf-")
    try:
        job.say("converting with onnx2tf")
        tf_models = onnx_to_tf(model, workdir, precisions=(job.precision,),
                               input_shapes={name: array.shape for name, array in job.feeds.items()})
        tf_feeds = tf_models.feeds_for_tf(job.feeds)
        if job.kind == files.TFLITE:
            path = tf_models.tflite[job.precision]
            job.verify(tflite_io.run(path, tf_feeds), f"tflite {job.precision}")
            with open(path, "rb") as f:
                write_bytes(f.read(), job.output)
        else:
            job.verify(savedmodel_io.run(tf_models.savedmodel, tf_feeds), "tf savedmodel")
            with files.atomic_output(job.output) as tmp:
                shutil.copytree(tf_models.savedmodel, tmp,
                                ignore=shutil.ignore_patterns("*.tflite", "*.json", "*.onnx"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
