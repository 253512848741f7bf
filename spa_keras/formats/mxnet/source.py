"""`MXNetSource`: the format adapter of MXNet checkpoints (`PREFIX-symbol.json` + `PREFIX-EPOCH.params`) and Gluon
HybridBlocks.

MXNet models are analysed as their mxnet.onnx export (`proto`), which names every initializer after the MXNet
parameter it holds; a plan is cut from that export by ONNX surgery and then applied to the symbol and parameters by
name (`surgery.py`), and the slim checkpoint is run with MXNet against the slim ONNX model before it is returned.
Gluon blocks come back as trainable `gluon.SymbolBlock`s.

Example:

>>> source = MXNetSource.open("resnet18_v1", epoch=0, input_shapes={None: (1, 3, 224, 224)})   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import TYPE_CHECKING, Any

from spa_keras.bridges import mxnet_io
from spa_keras.common import files
from spa_keras.common.errors import InputError
from spa_keras.common.tensors import TensorSpec
from spa_keras.formats.base import Feeds, WriteJob
from spa_keras.formats.onnx.source import OnnxSource, write_onnx

if TYPE_CHECKING:
    import numpy as np

    from spa_keras.analysis.groups import Analysis


def is_mxnet_model(obj: Any) -> bool:
    """An `mxnet_io.Checkpoint` or a Gluon block."""
    return isinstance(obj, mxnet_io.Checkpoint) or is_gluon_block(obj)


def is_gluon_block(obj: Any) -> bool:
    return hasattr(obj, "hybridize") and hasattr(obj, "collect_params")


def one_shape(input_shapes: dict | tuple | None) -> Any:
    """MXNet symbols carry no shapes: one input's shape as a tuple, several as a dict, None when not given."""
    if isinstance(input_shapes, dict) and set(input_shapes) == {None}:
        return input_shapes[None]
    return input_shapes


class MXNetSource(OnnxSource):
    """An MXNet `Checkpoint` (`gluon=True`: made from a Gluon block, which the slim model becomes again)."""

    kind = files.MXNET
    framework = "mxnet"

    def __init__(self, checkpoint: Any, input_shapes: dict | None = None, gluon: bool = False) -> None:
        super().__init__(checkpoint, checkpoint.name, input_shapes)
        self.gluon = gluon

    @classmethod
    def open(cls, path: str, input_shapes: dict | None = None, epoch: int = 0) -> MXNetSource:
        checkpoint = mxnet_io.load(str(path), epoch)
        checkpoint.name = str(path)
        return cls(checkpoint, input_shapes)

    @classmethod
    def of_block(cls, block: Any, input_shapes: dict | None) -> MXNetSource:
        if input_shapes is None:
            raise InputError("a Gluon block needs input_shape=, for example input_shape=(1, 3, 224, 224)")
        shape = one_shape(input_shapes)
        checkpoint = mxnet_io.from_block(block, shape if not isinstance(shape, dict) else next(iter(shape.values())))
        checkpoint.name = f"Gluon {type(block).__name__}"
        return cls(checkpoint, input_shapes, gluon=True)

    @functools.cached_property
    def proto(self) -> Any:
        return mxnet_io.to_onnx(self.model, one_shape(self.given_shapes))

    @property
    def specs(self) -> list[TensorSpec]:
        return mxnet_io.input_specs(self.model, one_shape(self.given_shapes))

    def run(self, feeds: Feeds) -> Feeds:
        return mxnet_io.run(self.model, feeds)

    def slim(self, analysis: Analysis, removed: np.ndarray, updates: dict | None = None) -> Any:
        """The plan on the symbol and parameters, checked by an MXNet forward pass against the slim ONNX model: a
        slim `Checkpoint`, or a `gluon.SymbolBlock` for a block."""
        from spa_keras.bridges import onnx_io
        from spa_keras.common.verify import compare
        from spa_keras.formats.mxnet.surgery import prune_mxnet
        from spa_keras.formats.onnx.surgery import analysis_batch

        slim_onnx = self.slim_analysed(analysis, removed, updates)
        slim = prune_mxnet(self.model, analysis.param_masks(removed), slim_onnx, updates)
        feeds = analysis_batch(analysis.graph, onnx_io.input_specs(slim_onnx))
        compare(onnx_io.run(slim_onnx, feeds), mxnet_io.run(slim, feeds), source="slim ONNX",
                target="slim MXNet").require()
        return mxnet_io.to_block(slim) if self.gluon else slim

    def write(self, job: WriteJob) -> None:
        from spa_keras.bridges import onnx_io
        from spa_keras.common.verify import TOLERANCE

        if job.kind == files.MXNET:
            job.say("writing the MXNet checkpoint")
            with tempfile.TemporaryDirectory() as tmp:
                written = mxnet_io.load(mxnet_io.save(self.model, os.path.join(tmp, "check"))[0])
                job.verify(mxnet_io.run(written, job.feeds), "mxnet (written)")
            mxnet_io.save(self.model, job.output)
            return
        job.say("exporting to ONNX with mxnet.onnx")
        onnx_model = mxnet_io.to_onnx(self.model, one_shape(self.given_shapes))
        job.verify(onnx_io.run(onnx_model, job.feeds), "onnxruntime", TOLERANCE["float32"])
        write_onnx(onnx_model, job, verified=True)
