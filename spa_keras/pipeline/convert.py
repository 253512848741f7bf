"""`convert(source, output)`: pick the bridge from the kinds of source and output, verify, write atomically.

Every route ends in a comparison of the written model with the source framework's own output on the same random
batch (relative difference, see `spa_keras.common.verify`); nothing is written when it fails.

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
import shutil
import tempfile

from spa_keras.common import files
from spa_keras.common.errors import InputError, SpaError, first_line
from spa_keras.common.verify import TOLERANCE, compare, parse_input_shape, random_batch


@dataclasses.dataclass
class Source:
    """A loaded source model: its kind, a display name, input specs and a runner in its own framework."""

    kind: str
    name: str
    model: object
    specs: list
    run: object  # feeds -> {output name: array}
    framework: str


@dataclasses.dataclass
class ConversionReport:
    source: str
    output: str
    checks: list  # Verification, in the order they were made

    def __str__(self):
        return "\n".join([f"{self.source} -> {self.output}"] + [f"  {c}" for c in self.checks])


def reference_run(src, shapes):
    """(feeds, outputs) of `src` on a random batch of two, or of one for a model that declares a free batch but runs
    at batch 1 only (a Reshape to a fixed size); a model that runs at neither is an `InputError`."""
    try:
        feeds = random_batch(src.specs, shapes, batch=2)
        return feeds, src.run(feeds)
    except SpaError:
        raise
    except Exception:
        feeds = random_batch(src.specs, shapes, batch=1)
    try:
        return feeds, src.run(feeds)
    except SpaError:
        raise
    except Exception as exc:
        raise InputError(f"{src.framework} cannot run the model on a random batch: {first_line(exc)}") from exc


def load_source(source, epoch=0, input_shape=None, signature=None):
    """Load `source` (path or in-memory model) into a `Source`."""
    from spa_keras.bridges import keras_io, mxnet_io, onnx_io

    if isinstance(source, (str, os.PathLike)):
        path = str(source)
        kind = files.model_kind(path)
        if kind in (files.KERAS, files.H5):
            model = keras_io.load(path)
            return Source(kind, path, model, keras_io.input_specs(model), lambda f: keras_io.run(model, f), "keras")
        if kind == files.ONNX:
            model = onnx_io.load(path)
            sess = onnx_io.check(model, where=path)
            return Source(kind, path, model, onnx_io.input_specs(model), lambda f: onnx_io.run(sess, f), "onnxruntime")
        if kind == files.SAVEDMODEL:
            from spa_keras.bridges import savedmodel_io

            return Source(kind, path, (path, signature), savedmodel_io.input_specs(path, signature),
                          lambda f: savedmodel_io.run(path, f, signature), "tensorflow")
        if kind == files.MXNET:
            ckpt = mxnet_io.load(path, epoch)
            return _mxnet_source(ckpt, input_shape, path)
        raise InputError(f"{path}: TFLite is a deployment format and cannot be converted further; convert from "
                         "the model it was made from")
    if is_keras_model(source):
        return Source(files.KERAS, f"keras.Model '{source.name}'", source, keras_io.input_specs(source),
                      lambda f: keras_io.run(source, f), "keras")
    if type(source).__name__ == "ModelProto":
        sess = onnx_io.check(source, where="ONNX model")
        return Source(files.ONNX, "ONNX model", source, onnx_io.input_specs(source),
                      lambda f: onnx_io.run(sess, f), "onnxruntime")
    if isinstance(source, mxnet_io.Checkpoint):
        return _mxnet_source(source, input_shape, source.name)
    if hasattr(source, "hybridize"):
        if input_shape is None:
            raise InputError("a Gluon block needs input_shape, for example input_shape=(1, 3, 224, 224)")
        shape = input_shape if not isinstance(input_shape, dict) else next(iter(input_shape.values()))
        return _mxnet_source(mxnet_io.from_block(source, shape), input_shape, f"Gluon {type(source).__name__}")
    raise InputError(f"cannot convert a {type(source).__name__}: give a path, a keras.Model, an onnx.ModelProto, "
                     "a Gluon HybridBlock or an mxnet_io.Checkpoint")


def _mxnet_source(ckpt, input_shape, name):
    from spa_keras.bridges import mxnet_io

    shape = input_shape
    if isinstance(shape, dict) and set(shape) == {None}:
        shape = shape[None]
    ckpt.name = name
    return Source(files.MXNET, name, ckpt, mxnet_io.input_specs(ckpt, shape),
                  lambda f: mxnet_io.run(ckpt, f), "mxnet")


def is_keras_model(obj):
    try:
        import keras
    except ImportError:
        return False
    return isinstance(obj, keras.Model)


def source_kind(source):
    """The kind of a source model, path or in-memory (MXNET for Checkpoints and Gluon blocks)."""
    if isinstance(source, (str, os.PathLike)):
        return files.model_kind(str(source))
    if is_keras_model(source):
        return files.KERAS
    if type(source).__name__ == "Checkpoint" or hasattr(source, "hybridize"):
        return files.MXNET
    return files.ONNX


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
    kind_in = source_kind(source)
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
    src = load_source(source, epoch, shapes, signature)
    say(f"running {src.framework} on a random batch")
    feeds, reference = reference_run(src, shapes)
    tol = TOLERANCE[precision] if tolerance is None else float(tolerance)
    checks = []

    def verify(outputs, target, tolerance=tol):
        checks.append(compare(reference, outputs, source=src.framework, target=target, tolerance=tolerance).require())

    if src.kind in (files.KERAS, files.H5):
        _from_keras(src.model, output, out_kind, precision, feeds, verify, say)
    elif src.kind == files.SAVEDMODEL:
        _from_savedmodel(src.model, output, out_kind, precision, feeds, verify, say)
    elif out_kind == files.MXNET:
        _to_mxnet(src.model, output, feeds, verify, say)
    else:
        if src.kind == files.MXNET:
            from spa_keras.bridges import mxnet_io, onnx_io

            say("exporting to ONNX with mxnet.onnx")
            onnx_model = mxnet_io.to_onnx(src.model, shapes)
            verify(onnx_io.run(onnx_model, feeds), "onnxruntime", TOLERANCE["float32"])
        else:
            onnx_model = src.model
        _from_onnx(onnx_model, output, out_kind, precision, feeds, verify, say, verified=src.kind == files.MXNET)
    return ConversionReport(src.name, output, checks)


def _from_keras(model, output, out_kind, precision, feeds, verify, say):
    from spa_keras.bridges import keras_io, onnx_io, tflite_io
    from spa_keras.bridges.keras_to_tf import keras_to_savedmodel, keras_to_tflite

    if out_kind == files.ONNX:
        from spa_keras.bridges.keras_to_onnx import keras_to_onnx

        say("converting with tf2onnx")
        onnx_model = keras_to_onnx(model)
        verify(onnx_io.run(onnx_model, feeds), "onnxruntime")
        onnx_io.save(onnx_model, output)
    elif out_kind == files.TFLITE:
        say(f"converting to TFLite ({precision})")
        flatbuffer = keras_to_tflite(model, precision)
        verify(tflite_io.run(flatbuffer, feeds), f"tflite {precision}")
        _write_bytes(flatbuffer, output)
    elif out_kind == files.SAVEDMODEL:
        from spa_keras.bridges import savedmodel_io

        say("exporting a SavedModel")
        with files.atomic_output(output) as tmp:
            keras_to_savedmodel(model, tmp)
            verify(savedmodel_io.run(tmp, feeds), "tf savedmodel")
    else:
        with files.atomic_output(output) as tmp:
            model.save(tmp)
            verify(keras_io.run(keras_io.load(tmp), feeds), f"keras ({out_kind})")


def _from_savedmodel(source, output, out_kind, precision, feeds, verify, say):
    from spa_keras.bridges import onnx_io, savedmodel_io, tflite_io
    from spa_keras.bridges.keras_to_tf import savedmodel_to_tflite

    path, signature = source
    if out_kind == files.TFLITE:
        say(f"converting to TFLite ({precision})")
        flatbuffer = savedmodel_to_tflite(path, precision, signature)
        verify(tflite_io.run(flatbuffer, feeds), f"tflite {precision}")
        _write_bytes(flatbuffer, output)
        return
    if out_kind == files.SAVEDMODEL:
        raise InputError(f"{output}: the input is a SavedModel already; write .onnx, .tflite or .keras")
    say("converting with tf2onnx")
    onnx_model = savedmodel_io.savedmodel_to_onnx(path, signature=signature)
    verify(onnx_io.run(onnx_model, feeds), "onnxruntime")
    if out_kind == files.ONNX:
        onnx_io.save(onnx_model, output)
    else:
        _onnx_to_keras(onnx_model, output, out_kind, feeds, verify, say)


def _to_mxnet(checkpoint, output, feeds, verify, say):
    """Write an MXNet checkpoint (epoch 0) and check it by loading it back and running it with MXNet."""
    from spa_keras.bridges import mxnet_io

    say("writing the MXNet checkpoint")
    with tempfile.TemporaryDirectory() as tmp:
        written = mxnet_io.load(mxnet_io.save(checkpoint, os.path.join(tmp, "check"))[0])
        verify(mxnet_io.run(written, feeds), "mxnet (written)")
    mxnet_io.save(checkpoint, output)


def _onnx_to_keras(model, output, out_kind, feeds, verify, say):
    """The native ONNX → Keras 3 rebuild, checked before and after saving."""
    from spa_keras.bridges import keras_io
    from spa_keras.bridges.onnx_to_keras import onnx_to_keras

    say("rebuilding as a Keras 3 model")
    keras_model = onnx_to_keras(model, {name: array.shape for name, array in feeds.items()})
    verify(keras_io.run(keras_model, feeds), "keras (rebuilt from ONNX)")
    with files.atomic_output(output) as tmp:
        keras_model.save(tmp)
        verify(keras_io.run(keras_io.load(tmp), feeds), f"keras ({out_kind})")


def _from_onnx(model, output, out_kind, precision, feeds, verify, say, verified=False):
    from spa_keras.bridges import onnx_io, savedmodel_io, tflite_io
    from spa_keras.bridges.onnx_to_tf import onnx_to_tf

    if out_kind == files.ONNX:
        if not verified:  # as the source ran: an optimised session rounds differently (fused Conv+BatchNorm)
            verify(onnx_io.run(onnx_io.session(model, output, optimize=False), feeds), "onnxruntime")
        onnx_io.save(model, output)
        return
    if out_kind in (files.KERAS, files.H5):
        _onnx_to_keras(model, output, out_kind, feeds, verify, say)
        return
    if out_kind not in (files.TFLITE, files.SAVEDMODEL):
        raise InputError(f"{output}: an ONNX model converts to .tflite, .keras, a SavedModel directory or .onnx")
    workdir = tempfile.mkdtemp(prefix="spa-onnx2tf-")
    try:
        say("converting with onnx2tf")
        tf_models = onnx_to_tf(model, workdir, precisions=(precision,),
                               input_shapes={name: array.shape for name, array in feeds.items()})
        tf_feeds = tf_models.feeds_for_tf(feeds)
        if out_kind == files.TFLITE:
            path = tf_models.tflite[precision]
            verify(tflite_io.run(path, tf_feeds), f"tflite {precision}")
            with open(path, "rb") as f:
                _write_bytes(f.read(), output)
        else:
            verify(savedmodel_io.run(tf_models.savedmodel, tf_feeds), "tf savedmodel")
            with files.atomic_output(output) as tmp:
                shutil.copytree(tf_models.savedmodel, tmp,
                                ignore=shutil.ignore_patterns("*.tflite", "*.json", "*.onnx"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _write_bytes(data, output):
    with files.atomic_output(output) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
