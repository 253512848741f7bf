"""`convert(source, output)`: pick the bridge from the kinds of source and output, verify, write atomically.

The source's format adapter (`spa_keras.formats`) owns the routes; every route ends in a comparison of the written
model with the source framework's own output on the same random batch (relative difference, see
`spa_keras.common.verify`); nothing is written when it fails.

Routes:
    Keras (.keras/.h5/keras.Model) → .onnx (tf2onnx), .tflite and SavedModel (TensorFlow), .keras/.h5
    SavedModel                     → .onnx (tf2onnx), .tflite (TFLiteConverter), .keras (through ONNX)
    ONNX (.onnx/ModelProto)        → .tflite and SavedModel (onnx2tf), .keras (native rebuild), .onnx
    MXNet prefix, Checkpoint or    → MXNet checkpoint (PREFIX-symbol.json + PREFIX-0000.params), .onnx (mxnet.onnx),
    Gluon block                      and on from ONNX to .tflite, SavedModel and .keras

Example:

>>> report = convert("model.h5", "model.onnx")     # doctest: +SKIP
>>> print(report)                                  # doctest: +SKIP
"""

import dataclasses
import os

from spa_keras import formats
from spa_keras.common import files
from spa_keras.common.errors import InputError
from spa_keras.common.tensors import parse_input_shape
from spa_keras.common.verify import TOLERANCE, compare
from spa_keras.formats.base import WriteJob


@dataclasses.dataclass
class ConversionReport:
    source: str
    output: str
    checks: list  # Verification, in the order they were made

    def __str__(self):
        return "\n".join([f"{self.source} -> {self.output}"] + [f"  {c}" for c in self.checks])


def convert(source, output, *, epoch=0, input_shape=None, precision="float32", tolerance=None, progress=None,
            signature=None):
    """Convert `source` to `output`; return a report.

    The output's kind is its extension; `-symbol.json` is an MXNet checkpoint; a path without an extension is a
    SavedModel directory, or from an MXNet source an MXNet prefix (end it with '/' for a SavedModel).
    `input_shape` fills free dimensions ('1,3,224,224' or a tuple); `precision` applies to TFLite outputs
    ('float32', 'float16' or dynamic-range 'int8'); `tolerance` bounds the relative difference (default by
    precision: 1e-4, 2e-2, 2e-1); `signature` chooses a SavedModel's signature (default serving_default).
    """
    say = progress or (lambda message: None)
    output = str(output)
    kind_in = formats.kind_of(source)
    out_kind = files.model_kind(output, for_output=True, source_kind=kind_in)
    files.check_output_path(output)
    if isinstance(source, (str, os.PathLike)):
        files.refuse_same(output, ("the input model", source))
    if precision != "float32" and out_kind != files.TFLITE:
        raise InputError(f"--precision {precision} applies to .tflite outputs only, not to {output}")
    if out_kind == files.MXNET and kind_in != files.MXNET:
        raise InputError(f"{output}: MXNet checkpoints are written from MXNet models only; write .onnx (MXNet "
                         "imports it with mx.onnx.import_model) or .tflite, .keras, a SavedModel")
    shapes = parse_input_shape(input_shape) if isinstance(input_shape, str) else (
        {None: tuple(input_shape)} if isinstance(input_shape, (tuple, list)) else input_shape)
    say(f"loading {source if isinstance(source, (str, os.PathLike)) else type(source).__name__}")
    src = formats.load(source, input_shapes=shapes, epoch=epoch, signature=signature)
    say(f"running {src.framework} on a random batch")
    feeds, reference = src.reference_run(shapes)
    tol = TOLERANCE[precision] if tolerance is None else float(tolerance)
    checks = []

    def verify(outputs, target, tolerance=tol):
        checks.append(compare(reference, outputs, source=src.framework, target=target, tolerance=tolerance).require())

    src.write(WriteJob(output, out_kind, precision, feeds, verify, say))
    return ConversionReport(src.name, output, checks)
