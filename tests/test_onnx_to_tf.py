"""ONNX → TFLite and SavedModel through onnx2tf: NCHW graphs (MXNet, PP-OCR) and NHWC graphs (tf2onnx)."""

import os

import numpy as np
import onnx

from spa_keras import convert
from spa_keras.bridges import onnx_io, tflite_io
from spa_keras.bridges.onnx_to_tf import channel_first_inputs
from spa_keras.common.tensors import random_batch


def test_nchw_mxnet_onnx_to_tflite_and_savedmodel(mxnet_resnet18, tmp_path):
    onnx_path = tmp_path / "r18.onnx"
    convert(mxnet_resnet18, onnx_path, input_shape="1,3,32,32")
    before = open(onnx_path, "rb").read()
    assert channel_first_inputs(onnx.load(onnx_path)) == ["data"]
    report = convert(str(onnx_path), tmp_path / "r18.tflite")
    assert report.checks[0].rel <= 1e-4
    assert open(onnx_path, "rb").read() == before  # onnx2tf worked on a copy
    model = onnx_io.load(onnx_path)
    feeds = random_batch(onnx_io.input_specs(model), batch=1)
    out = tflite_io.run(str(tmp_path / "r18.tflite"), {"data": np.moveaxis(feeds["data"], 1, -1)})
    assert list(out.values())[0].shape == (1, 1000)  # TFLite takes NHWC for an NCHW ONNX model
    report = convert(str(onnx_path), tmp_path / "r18_saved")
    assert report.checks[0].rel <= 1e-4 and os.path.exists(tmp_path / "r18_saved" / "saved_model.pb")
    assert not list(tmp_path.glob("r18_saved/*.tflite"))


def test_nhwc_tf2onnx_graph_keeps_its_layout(fer_h5, tmp_path):
    onnx_path = tmp_path / "fer.onnx"
    convert(fer_h5, onnx_path)
    assert channel_first_inputs(onnx.load(onnx_path)) == []
    report = convert(str(onnx_path), tmp_path / "fer.tflite")
    assert report.checks[0].rel <= 1e-4
    from ai_edge_litert.interpreter import Interpreter

    shape = Interpreter(model_path=str(tmp_path / "fer.tflite")).get_input_details()[0]["shape"]
    assert list(shape[1:]) == [64, 64, 1]  # NHWC kept, not read as NCHW


def test_real_ppocr_classifier_to_tflite(ppocr_onnx, tmp_path):
    report = convert(ppocr_onnx, tmp_path / "cls.tflite", input_shape="1,3,48,192")
    assert report.checks[0].rel <= 1e-4
