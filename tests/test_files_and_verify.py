import os

import numpy as np
import pytest

from spa_keras import files
from spa_keras.errors import InputError, VerificationError
from spa_keras.verify import TensorSpec, compare, concrete_shape, parse_input_shape, random_batch


def test_model_kind_by_content_and_suffix(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "net-symbol.json").write_text("{}")
    assert files.model_kind(tmp_path / "m.onnx") == files.ONNX
    assert files.model_kind(tmp_path / "sm") == files.SAVEDMODEL
    assert files.model_kind(tmp_path / "net") == files.MXNET
    assert files.model_kind(tmp_path / "net-symbol.json") == files.MXNET
    assert files.model_kind(tmp_path / "out.tflite", for_output=True) == files.TFLITE
    assert files.model_kind(tmp_path / "exported", for_output=True) == files.SAVEDMODEL
    with pytest.raises(InputError, match="unknown output kind '.pt'"):
        files.model_kind(tmp_path / "x.pt", for_output=True)
    (tmp_path / "weights.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="unknown model kind '.pt'"):
        files.model_kind(tmp_path / "weights.pt")
    with pytest.raises(InputError, match="no such file"):
        files.model_kind(tmp_path / "missing.onnx")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a SavedModel"):
        files.model_kind(tmp_path / "plain")


def test_mxnet_files_naming():
    assert files.mxnet_files("a/net", 3) == ("a/net", "a/net-symbol.json", "a/net-0003.params")
    assert files.mxnet_files("a/net-symbol.json")[0] == "a/net"


def test_atomic_output_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with files.atomic_output(target) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("converter crashed")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]  # no temporary left behind
    with files.atomic_output(target) as tmp:
        open(tmp, "wb").write(b"new")
    assert target.read_bytes() == b"new"


def test_atomic_output_replaces_a_directory(tmp_path):
    target = tmp_path / "saved"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with files.atomic_output(target) as tmp:
        os.mkdir(tmp)
        open(os.path.join(tmp, "new.txt"), "w").write("new")
    assert sorted(os.listdir(target)) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["saved"]


def test_output_directory_must_exist(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        files.check_output_path(tmp_path / "nope" / "m.onnx")


def test_compare_relative_to_output_scale():
    ref = {"y": np.array([[1e-6, -2e-6]])}
    close = compare(ref, {"y": ref["y"] * (1 + 1e-6)}, source="a", target="b")
    assert close.ok and close.rel < 1e-5
    far = compare(ref, {"y": ref["y"] + 1e-6}, source="a", target="b")
    assert not far.ok and far.rel == pytest.approx(0.5)
    with pytest.raises(VerificationError, match="relative 5.00e-01"):
        far.require()


def test_compare_aligns_channels_last_and_matches_names():
    ref = {"a": np.arange(24.0).reshape(1, 2, 3, 4), "b": np.ones((1, 2))}
    out = {"b:0": np.ones((1, 2)), "a:0": np.moveaxis(ref["a"], 1, -1)}  # other order, NHWC, ':0' suffixes
    assert compare(ref, out, source="s", target="t").max_abs == 0
    with pytest.raises(VerificationError, match="has shape"):
        compare({"a": np.ones((2, 3))}, {"a": np.ones((2, 4))}, source="s", target="t")
    with pytest.raises(VerificationError, match="has 1 outputs"):
        compare({"a": np.ones(1)}, {"a": np.ones(1), "b": np.ones(1)}, source="s", target="t")


def test_nan_output_fails():
    assert not compare({"y": np.ones(2)}, {"y": np.array([1.0, np.nan])}, source="s", target="t").ok


def test_input_shapes():
    assert parse_input_shape("1,3,224,224") == {None: (1, 3, 224, 224)}
    assert parse_input_shape("ids:1,16;mask:1,16") == {"ids": (1, 16), "mask": (1, 16)}
    with pytest.raises(InputError, match="--input-shape"):
        parse_input_shape("1,a")
    spec = TensorSpec("x", (None, None, 8), "float32")
    with pytest.raises(InputError, match="free dimensions"):
        concrete_shape(spec)
    assert concrete_shape(spec, {None: (1, 5, 8)}, batch=2) == (2, 5, 8)
    with pytest.raises(InputError, match="rank 3"):
        concrete_shape(spec, {None: (1, 5)})
    feeds = random_batch([spec, TensorSpec("ids", (None, 4), "int32")], {None: (1, 5, 8), "ids": (1, 4)})
    assert feeds["x"].shape == (2, 5, 8) and feeds["x"].dtype == np.float32
    assert feeds["ids"].dtype == np.int32 and set(np.unique(feeds["ids"])) <= {0, 1}
