"""Format adapters: one `Source` class per kind of model, and `load` to pick it.

    keras/        KerasSource: Keras 3 models and .keras/.h5 files (front-end, surgery, OBSPA's activations)
    onnx/         OnnxSource: ONNX models (front-end, surgery, OBSPA's activations, writes through onnx2tf)
    savedmodel.py SavedModelSource: a SavedModel, analysed and cut as its tf2onnx export
    mxnet/        MXNetSource: MXNet checkpoints and Gluon blocks, analysed as their ONNX export, cut natively
    base.py       Source, the interface the engine sees; WriteJob

Nothing outside this package, `bridges/` and `compute/` imports a format library: analysis, planning, importance
and OBSPA reach a model through `analysis.graph.source`.

Example:

>>> from spa_keras import formats
>>> source = formats.load("model.keras", input_shapes={None: (1, 32, 32, 3)})   # doctest: +SKIP
>>> source.graph.nodes[:3]                                                      # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from spa_keras.common import files
from spa_keras.common.errors import InputError
from spa_keras.formats.base import Source, WriteJob

__all__ = ["Source", "WriteJob", "load", "kind_of"]


def kind_of(model: Any) -> str:
    """The kind of a model, a path or an in-memory object (MXNet for checkpoints and Gluon blocks)."""
    if isinstance(model, Source):
        return model.kind
    if isinstance(model, (str, os.PathLike)):
        return files.model_kind(str(model))
    from spa_keras.formats.keras.source import is_keras_model

    if is_keras_model(model):
        return files.KERAS
    if type(model).__name__ == "Checkpoint" or hasattr(model, "hybridize"):
        return files.MXNET
    return files.ONNX


def load(model: Any, *, input_shapes: dict | None = None, via: str | None = None, epoch: int = 0,
         signature: str | None = None) -> Source:
    """The `Source` of `model`.

    Args:
        model: a keras.Model, onnx.ModelProto, `mxnet_io.Checkpoint` or Gluon HybridBlock, or a path: .keras,
            .h5, .onnx, a SavedModel directory or an MXNet prefix (PREFIX-symbol.json + PREFIX-EPOCH.params).
        input_shapes: {input name or None: shape with batch} for free input dimensions (MXNet models and Gluon
            blocks need one, their symbols carry none).
        via: "onnx" analyses and cuts a Keras model as its tf2onnx export (the slim model is ONNX).
        epoch: which PREFIX-EPOCH.params of an MXNet prefix.
        signature: a SavedModel's signature (default serving_default).
    """
    from spa_keras.formats.keras.source import KerasSource, is_keras_model
    from spa_keras.formats.onnx.source import OnnxSource, is_onnx_model

    if isinstance(model, Source):
        return model
    if isinstance(model, (str, os.PathLike)):
        source = _open(str(model), input_shapes, epoch, signature)
    elif is_keras_model(model):
        source = KerasSource(model, input_shapes=input_shapes)
    elif is_onnx_model(model):
        source = OnnxSource(model, input_shapes=input_shapes)
    else:
        source = _mxnet(model, input_shapes)
    if via == "onnx" and isinstance(source, KerasSource):
        from spa_keras.bridges.keras_to_onnx import keras_to_onnx

        source = OnnxSource(keras_to_onnx(source.model, where=source.name), source.name, input_shapes)
    return source


def _open(path: str, input_shapes: dict | None, epoch: int, signature: str | None) -> Source:
    kind = files.model_kind(path)
    if kind in (files.KERAS, files.H5):
        from spa_keras.formats.keras.source import KerasSource

        return KerasSource.open(path, input_shapes)
    if kind == files.ONNX:
        from spa_keras.formats.onnx.source import OnnxSource

        return OnnxSource.open(path, input_shapes)
    if kind == files.SAVEDMODEL:
        from spa_keras.formats.savedmodel import SavedModelSource

        return SavedModelSource(path, signature, input_shapes)
    if kind == files.MXNET:
        from spa_keras.formats.mxnet.source import MXNetSource

        return MXNetSource.open(path, input_shapes, epoch)
    raise InputError(f"{path}: TFLite is a deployment format and cannot be pruned or converted further; use the "
                     "model it was made from (.keras, .onnx, a SavedModel or an MXNet checkpoint)")


def _mxnet(model: Any, input_shapes: dict | None) -> Source:
    from spa_keras.bridges import mxnet_io
    from spa_keras.formats.mxnet.source import MXNetSource, is_gluon_block

    if isinstance(model, mxnet_io.Checkpoint):
        return MXNetSource(model, input_shapes)
    if is_gluon_block(model):
        return MXNetSource.of_block(model, input_shapes)
    raise InputError(f"cannot read a {type(model).__name__}: give a keras.Model, an onnx.ModelProto, a Gluon "
                     "HybridBlock, an mxnet_io.Checkpoint or a path (.keras, .h5, .onnx, SavedModel directory, MXNet "
                     "prefix)")
