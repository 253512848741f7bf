"""Keras 3 → ONNX (tf2onnx), TFLite and SavedModel, verified against Keras on real architectures."""

import os

import numpy as np
import onnx
import pytest

from spa_keras import convert
from spa_keras.bridges import keras_io, onnx_io, savedmodel_io, tflite_io
from spa_keras.bridges.keras_to_onnx import keras_to_onnx
from spa_keras.common.errors import ConversionError
from spa_keras.common.tensors import random_batch
from tests import models


@pytest.fixture(scope="module")
def small_cnn():
    return models.small_cnn()


@pytest.fixture(scope="module")
def mobilenet():
    return models.mobilenet_v2()


def test_fer_h5_to_onnx(fer_h5, tmp_path):
    out = tmp_path / "fer.onnx"
    report = convert(fer_h5, out)
    assert report.checks[0].rel <= 1e-4
    model = onnx.load(out)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input_1"]
    assert [o.name for o in model.graph.output] == ["predictions"]  # the Keras output name, not a TF op name
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert not dim.HasField("dim_value")  # dynamic batch
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}


def test_onnx_batch_is_dynamic(small_cnn):
    model = keras_to_onnx(small_cnn)
    for batch in (1, 3):
        feeds = random_batch(keras_io.input_specs(small_cnn), batch=batch)
        ref = keras_io.run(small_cnn, feeds)["logits"]
        out = onnx_io.run(model, feeds)["logits"]
        assert out.shape == (batch, 5)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_convnext_block_needs_both_fixes(tmp_path):
    """Grouped conv (XLA wrapper) and exact GELU (Erfc): plain tf2onnx leaves TF ops; our bridge converts."""
    import tensorflow as tf
    import tf2onnx

    model = models.convnext_block()
    sig = (tf.TensorSpec((None, 16, 16, 3), tf.float32, name="image"),)
    plain, _ = tf2onnx.convert.from_keras(model, input_signature=sig, opset=17)
    left = {op for op, _ in onnx_io.unknown_ops(plain)}
    assert left & {"Erfc", "StatefulPartitionedCall"}, "tf2onnx fixed itself: the workarounds may be obsolete"
    with pytest.raises(ConversionError, match="not ONNX operators"):
        onnx_io.check(plain)
    report = convert(model, tmp_path / "convnext.onnx")
    assert report.checks[0].rel <= 1e-4
    ops = {n.op_type for n in onnx.load(tmp_path / "convnext.onnx").graph.node}
    assert "Erf" in ops and "Conv" in ops


def _tensor_dtypes(path):
    from ai_edge_litert.interpreter import Interpreter

    return {np.dtype(d["dtype"]).name for d in Interpreter(model_path=str(path)).get_tensor_details()}


def test_keras_file_to_tflite_all_precisions(mobilenet, tmp_path):
    src = tmp_path / "mnv2.keras"
    mobilenet.save(src)
    rels = {}
    for precision in ("float32", "float16", "int8"):
        out = tmp_path / f"mnv2_{precision}.tflite"
        rels[precision] = convert(str(src), out, precision=precision).checks[0].rel
    assert rels["float32"] <= 1e-4
    assert rels["float16"] <= 2e-2 and rels["int8"] <= 2e-1
    assert "float16" in _tensor_dtypes(tmp_path / "mnv2_float16.tflite")
    assert "int8" in _tensor_dtypes(tmp_path / "mnv2_int8.tflite")
    assert not {"float16", "int8"} & _tensor_dtypes(tmp_path / "mnv2_float32.tflite")
    sizes = {p: os.path.getsize(tmp_path / f"mnv2_{p}.tflite") for p in rels}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]


def test_keras_to_savedmodel_and_back_to_onnx(mobilenet, tmp_path):
    model = mobilenet
    saved = tmp_path / "mnv2_saved"
    assert convert(model, saved).checks[0].rel <= 1e-4
    assert os.path.exists(saved / "saved_model.pb")
    report = convert(str(saved), tmp_path / "mnv2.onnx")
    assert report.checks[0].source == "tensorflow" and report.checks[0].rel <= 1e-4
    assert convert(str(saved), tmp_path / "mnv2.tflite").checks[0].rel <= 1e-4


def test_fer_savedmodel_to_onnx(fer_h5, tmp_path):
    saved = tmp_path / "fer_saved"
    convert(fer_h5, saved)
    model = savedmodel_io.savedmodel_to_onnx(str(saved))
    assert [i.name for i in model.graph.input] == ["input_1"]  # signature names, not serving_default_input_1:0
    assert convert(str(saved), tmp_path / "fer.onnx").checks[0].rel <= 1e-4


def test_multi_io_order_is_kept(tmp_path):
    model = models.two_in_two_out()
    feeds = random_batch(keras_io.input_specs(model))
    ref = keras_io.run(model, feeds)
    assert list(ref) == ["zeta", "alpha"]
    report = convert(model, tmp_path / "two.onnx")
    onnx_out = onnx_io.run(onnx_io.load(tmp_path / "two.onnx"), feeds)
    assert list(onnx_out) == ["zeta", "alpha"]
    np.testing.assert_allclose(onnx_out["alpha"], ref["alpha"], atol=1e-5)
    convert(model, tmp_path / "two.tflite")
    tfl = tflite_io.run(str(tmp_path / "two.tflite"), feeds)
    np.testing.assert_allclose(list(tfl.values())[0], ref["zeta"], atol=1e-5)  # zeta (3 wide) first, as in Keras
    np.testing.assert_allclose(list(tfl.values())[1], ref["alpha"], atol=1e-5)
    assert report.checks[0].ok


def test_keras_to_keras_resave(fer_h5, tmp_path):
    report = convert(fer_h5, tmp_path / "fer.keras")
    assert report.checks[0].max_abs == 0.0


def test_layer_names_with_a_leading_underscore_export(tmp_path):
    """Models ported from PyTorch name layers `_conv_stem`, `_bn0`: TensorFlow rejects such variable scopes, so the
    TFLite and SavedModel exports rename those layers in a copy (same weights); the outputs equal Keras's and the
    model itself keeps its names."""
    import keras
    from keras import layers

    inner_in = keras.Input((8, 8, 8))
    inner = keras.Model(inner_in, layers.Conv2D(8, 1, name="_inner_conv")(inner_in), name="_block")
    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="_conv_stem")(inputs)
    x = layers.BatchNormalization(name="_bn0")(x)
    x = inner(x)
    x = layers.GlobalAveragePooling2D(name="_pool")(x)
    model = models.randomize_keras(keras.Model(inputs, layers.Dense(4, name="_fc")(x)))
    for out in (tmp_path / "m.tflite", tmp_path / "saved"):
        report = convert(model, out)
        assert report.checks[0].ok and report.checks[0].rel <= 1e-4
    assert [layer.name for layer in model.layers][1:3] == ["_conv_stem", "_bn0"]
