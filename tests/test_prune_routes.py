"""Every deployment path in one command: SavedModels (from Keras and from a plain tf.Module) pruned straight to
TFLite (float32, int8), to a SavedModel and to Keras 3; unsupported routes say what works.

Oracles: each written model is compared by the CLI with the slim model before it is written (the "verified ... ok"
line); here the files are also run again in their own runtime against the slim ONNX model that `spa.prune` gives
for the same SavedModel, and the int8 flatbuffer must be about a quarter of the float32 one. The default suite
runs each route on one of the two SavedModels (onnx2tf takes ~20 s a model here); `-m zoo` runs the other.
"""

import functools
import os

import numpy as np
import pytest
from click.testing import CliRunner

import spa_keras as spa
from spa_keras.bridges import onnx_io, savedmodel_io, tflite_io
from spa_keras.ui.cli import cli
from spa_keras.common.errors import InputError
from tests import models


class TinyNet:
    """A SavedModel written from a plain `tf.Module`: two convolutions, no Keras."""

    @staticmethod
    def save(path):
        import tensorflow as tf

        rng = np.random.default_rng(0)
        module = tf.Module()
        module.w1 = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, 32)).astype("float32"))
        module.b1 = tf.Variable(rng.normal(0, 0.1, (32,)).astype("float32"))
        module.w2 = tf.Variable(rng.normal(0, 0.3, (3, 3, 32, 32)).astype("float32"))
        module.wd = tf.Variable(rng.normal(0, 0.3, (32 * 12 * 12, 10)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 24, 24, 3], tf.float32, name="image")])
        def serve(x):
            x = tf.nn.relu(tf.nn.conv2d(x, module.w1, 1, "SAME") + module.b1)
            x = tf.nn.relu(tf.nn.conv2d(x, module.w2, 2, "SAME"))
            return {"logits": tf.matmul(tf.reshape(x, [-1, 32 * 12 * 12]), module.wd)}

        module.serve = serve
        tf.saved_model.save(module, path, signatures={"serving_default": serve, "predict": serve})
        return path


@pytest.fixture(scope="module")
def savedmodels(tmp_path_factory):
    root = tmp_path_factory.mktemp("savedmodels")
    keras_dir = str(root / "from_keras")
    models.small_cnn().export(keras_dir, verbose=False)
    return {"keras": keras_dir, "module": TinyNet.save(str(root / "from_module"))}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _tflite_input(path):
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(path)).get_input_details()[0]
    return detail["name"], tuple(int(d) for d in detail["shape"])


@functools.lru_cache(maxsize=None)
def _slim_onnx(path):
    return spa.prune(path, flops=0.5, criterion="l1").model


@pytest.mark.parametrize("which", [pytest.param("keras", marks=pytest.mark.zoo), "module"])
def test_savedmodel_to_tflite_in_one_command(which, savedmodels, tmp_path):
    path = savedmodels[which]
    sizes = {}
    reference = _slim_onnx(path)
    for precision in ("float32", "int8"):
        out = tmp_path / f"slim_{precision}.tflite"
        run = invoke("prune", "--criterion", "l1", path, "--flops", "0.5", "-o", out, "--precision", precision)
        assert run.exit_code == 0, run.output
        assert f"tflite {precision} vs onnxruntime" in run.output
        sizes[precision] = os.path.getsize(out)
        name, shape = _tflite_input(out)
        x = np.random.default_rng(1).normal(size=(1,) + shape[1:]).astype("float32")
        ours = next(iter(tflite_io.run(str(out), {name: x}).values()))
        ref_x = x if tuple(onnx_io.input_specs(reference)[0].shape[1:]) == x.shape[1:] else np.moveaxis(x, -1, 1)
        ref = next(iter(onnx_io.run(reference, {onnx_io.input_specs(reference)[0].name: ref_x}).values()))
        tolerance = 1e-4 if precision == "float32" else 0.1
        np.testing.assert_allclose(ours.reshape(ref.shape), ref, atol=tolerance * np.abs(ref).max())
    if which == "module":  # dynamic-range int8 leaves tensors under 1,024 values (all of small_cnn's) in float32
        assert sizes["int8"] < 0.4 * sizes["float32"]


@pytest.mark.parametrize("which", ["keras", pytest.param("module", marks=pytest.mark.zoo)])
def test_savedmodel_to_savedmodel_and_keras(which, savedmodels, tmp_path):
    import keras

    path = savedmodels[which]
    x = np.random.default_rng(2).normal(size=(2, 24, 24, 3)).astype("float32")
    for output in ("slim_sm/", "slim.keras"):
        run = invoke("prune", "--criterion", "l1", path, "--flops", "0.5", "-o", tmp_path / output)
        assert run.exit_code == 0, run.output
    reference = _slim_onnx(path)
    ref = next(iter(onnx_io.run(reference, {onnx_io.input_specs(reference)[0].name: x}).values()))
    sm = next(iter(savedmodel_io.run(str(tmp_path / "slim_sm"), {"x": x}).values()))
    np.testing.assert_allclose(sm.reshape(ref.shape), ref, atol=1e-4 * np.abs(ref).max())
    rebuilt = keras.models.load_model(tmp_path / "slim.keras")
    out = np.asarray(rebuilt(x if rebuilt.inputs[0].shape[-1] == 3 else np.moveaxis(x, -1, 1)))
    np.testing.assert_allclose(out.reshape(ref.shape), ref, atol=1e-4 * np.abs(ref).max())


def test_signatures_are_chosen_and_named(savedmodels, tmp_path):
    path = savedmodels["module"]
    run = invoke("prune", "--criterion", "l1", path, "--signature", "predict", "--flops", "0.5", "-o",
                 tmp_path / "p.onnx")
    assert run.exit_code == 0, run.output
    bad = invoke("prune", path, "--signature", "nope", "--flops", "0.5", "-o", tmp_path / "q.onnx")
    assert bad.exit_code == 2 and "no 'nope' signature (it has 'serving_default', 'predict')" in bad.output
    assert not (tmp_path / "q.onnx").exists()
    with pytest.raises(InputError, match="nope"):
        spa.prune(path, flops=0.5, signature="nope")


def test_routes_that_do_not_exist_say_what_works(savedmodels, tmp_path):
    cnn = tmp_path / "cnn.keras"
    models.small_cnn().save(cnn)
    precision = invoke("prune", cnn, "--flops", "0.3", "-o", tmp_path / "x.onnx", "--precision", "int8")
    assert precision.exit_code == 2 and "applies to .tflite outputs only" in precision.output
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"0")
    run = invoke("prune", tflite, "--flops", "0.3", "-o", tmp_path / "y.onnx")
    assert run.exit_code == 2 and "use the model it was made from" in run.output
    same = invoke("prune", savedmodels["module"], "--flops", "0.3", "-o", tmp_path / "z-symbol.json")
    assert same.exit_code == 2 and "from a SavedModel directory" in same.output


@pytest.mark.parametrize("family", ["resnet18_v1", pytest.param("mobilenetv2_0.25", marks=pytest.mark.zoo)])
def test_gluon_onnx_pruned_to_keras_3_trains_and_matches(family, tmp_path):
    """The migration path: a legacy MXNet model through ONNX to a slim, trainable Keras 3 model."""
    import keras

    from spa_keras.bridges import mxnet_io

    prefix = models.gluon_checkpoint(family, str(tmp_path / family))
    onnx_io.save(mxnet_io.to_onnx(mxnet_io.load(prefix), (1, 3, 32, 32)), str(tmp_path / "net.onnx"))
    for output in ("slim.keras", "slim.onnx"):
        run = invoke("prune", "--criterion", "l1", tmp_path / "net.onnx", "--flops", "0.5", "-o", tmp_path / output,
                     "--runtime", "tflite")
        assert run.exit_code == 0, run.output
    direct = invoke("prune", "--criterion", "l1", prefix, "--input-shape", "1,3,32,32", "--flops", "0.5", "-o",
                    tmp_path / "direct.keras", "--runtime", "tflite")  # the same channel multiple as the others
    assert direct.exit_code == 0, direct.output
    x = np.random.default_rng(4).normal(size=(4, 3, 32, 32)).astype("float32")
    ref = next(iter(onnx_io.run(onnx_io.load(str(tmp_path / "slim.onnx")), {"data": x}).values()))
    for name in ("slim.keras", "direct.keras"):
        model = keras.models.load_model(tmp_path / name)
        np.testing.assert_allclose(np.asarray(model(x)), ref, atol=1e-4 * np.abs(ref).max())
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, np.arange(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
