import os

import numpy as np
import pytest

from spa_keras.common import files
from spa_keras.common.errors import InputError, VerificationError
from spa_keras.common.verify import compare
from spa_keras.common.tensors import TensorSpec, concrete_shape, parse_input_shape, random_batch


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
    (target / "saved_model.pb").write_text("old")  # an earlier SavedModel is replaced whole
    with files.atomic_output(target) as tmp:
        os.mkdir(tmp)
        open(os.path.join(tmp, "new.txt"), "w").write("new")
    assert sorted(os.listdir(target)) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["saved"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a model")  # any other folder is not
    with pytest.raises(InputError, match="not a SavedModel"):
        with files.atomic_output(tmp_path / "mine"):
            pass


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


def test_a_check_says_when_it_cannot_tell():
    """Near-zero outputs (the DB text detector's: scale 1.79e-07, float32 noise 1.49e-07) pass as inconclusive
    instead of failing a correct model; outputs that are the same for every sample pass but say so."""
    ref = {"y": np.array([[1.79e-7, 0.5e-7], [0.2e-7, -1.0e-7]])}
    noisy = compare(ref, {"y": ref["y"] + 1.49e-7}, source="onnxruntime", target="onnxruntime")
    assert noisy.ok and "near zero" in noisy.note and "inconclusive" in str(noisy)
    assert not compare(ref, {"y": ref["y"] + 1e-3}, source="s", target="t").ok  # a real difference still fails
    constant = {"y": np.array([[0.3, 0.7], [0.3, 0.7]])}
    same = compare(constant, {"y": constant["y"]}, source="s", target="t")
    assert same.ok and "do not depend on the input" in same.note
    varied = {"y": np.array([[0.3, 0.7], [0.6, 0.4]])}
    assert compare(varied, varied, source="s", target="t").note is None


def test_an_onnx_model_written_as_onnx_matches_itself_exactly(tmp_path):
    """The write check of an ONNX output runs the written model as the source ran (no graph optimisation): the
    same model must not differ from itself. An optimised session fuses Conv+BatchNorm and rounds differently."""
    import onnx

    from spa_keras import convert
    from tests.test_engine_invariants import resnet_block_model

    model = resnet_block_model()
    report = convert(model, tmp_path / "same.onnx")
    assert report.checks[0].max_abs == 0
    assert onnx.load(tmp_path / "same.onnx").graph == model.graph


def test_input_shape_mistakes_are_named():
    from spa_keras.common.tensors import resolve_input_shapes

    spec = TensorSpec("x", (None, 3, None, None))
    with pytest.raises(InputError, match=r"rank 4 .* gives 3 dimensions .* for example --input-shape 1,3,224,224"):
        resolve_input_shapes([spec], {None: (1, 3, 64)})
    with pytest.raises(InputError, match="gives 64 at axis 1 where the model has 3"):
        resolve_input_shapes([spec], {None: (1, 64, 64, 3)})
    with pytest.raises(InputError, match="the model's inputs are 'x'"):
        resolve_input_shapes([spec], {"image": (1, 3, 64, 64)})
    with pytest.raises(InputError, match="sizes are positive"):
        resolve_input_shapes([spec], {None: (1, 3, 0, 64)})
    with pytest.raises(InputError, match="no dimensions"):
        parse_input_shape("")
    assert resolve_input_shapes([spec], {None: (4, 3, 64, 32)}) == ({"x": (1, 3, 64, 32)}, [])
    nhwc = TensorSpec("image", (None, None, None, 3))
    assert resolve_input_shapes([nhwc])[0] == {"image": (1, 224, 224, 3)}
    with pytest.raises(InputError, match="for example --input-shape 1,128"):
        concrete_shape(TensorSpec("ids", (None, None), "int64"))
    with pytest.raises(InputError, match="for example --input-shape 1,3,224,224"):  # was 1,3,1,1
        concrete_shape(spec)
