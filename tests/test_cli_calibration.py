"""`spa prune --calibration` and OBSPA's options on the command line, against the Python call with the same arrays
(in-process through click's runner, and one real process for the error a user sees)."""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper
from PIL import Image

import spa_keras as spa
from spa_keras.common.errors import InputError
from spa_keras.compute.calibration import Preprocess, load_calibration
from spa_keras.ui.cli import cli
from tests.test_engine_invariants import resnet_block_model
from tests.test_obspa import bn_model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def keras_weights(model):
    return {v.path: np.asarray(v.numpy()) for v in model.weights}


def onnx_weights(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def assert_same_weights(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_npy_on_keras_gives_the_python_calls_slim_model(tmp_path):
    import keras

    src, x_path, out, plan = tmp_path / "m.keras", tmp_path / "x.npy", tmp_path / "slim.keras", tmp_path / "p.json"
    bn_model().save(src)
    x = np.random.default_rng(0).uniform(-1, 1, (24, 10, 10, 3)).astype("float32")
    np.save(x_path, x)
    result = invoke("prune", src, "-o", out, "--flops", "0.3", "--calibration", x_path, "--plan-out", plan)
    assert result.exit_code == 0, result.output
    assert f"calibration {x_path}: 24 inputs for 'image' (10, 10, 3)" in result.output
    assert "criterion obspa: OBSPA(" in result.output and "hessian='calibration'" in result.output
    python = spa.prune(str(src), flops=0.3, criterion=spa.importance.OBSPA(calibration=x), runtime="tensorflow")
    assert json.loads(plan.read_text())["removed"] == json.loads(python.plan.to_json())["removed"]
    assert python.plan.updates  # kept weights were refit: the comparison below covers the reconstruction
    assert_same_weights(keras_weights(keras.models.load_model(out)), keras_weights(python.model))


def test_npy_on_an_nchw_onnx_model_gives_the_python_calls_slim_model(tmp_path):
    src, x_path, out = tmp_path / "r.onnx", tmp_path / "x.npy", tmp_path / "slim.onnx"
    onnx.save(resnet_block_model(), src)
    x = np.random.default_rng(1).uniform(-1, 1, (16, 3, 8, 8)).astype("float32")
    np.save(x_path, x)
    result = invoke("prune", src, "-o", out, "--flops", "0.3", "--calibration", x_path, "--samples", "12")
    assert result.exit_code == 0, result.output
    assert "12 inputs for 'x' (3, 8, 8)" in result.output
    python = spa.prune(str(src), flops=0.3, runtime="onnxruntime",
                       criterion=spa.importance.OBSPA(calibration=x[:12], samples=12))
    assert python.plan.updates and python.plan.removed
    assert_same_weights(onnx_weights(onnx.load(out)), onnx_weights(python.model))


def _images(folder):
    """Five RGB images of different sizes in two class folders, and a grayscale one: what a user's folder holds."""
    rng = np.random.default_rng(2)
    paths = []
    for i, (h, w) in enumerate([(12, 20), (9, 9), (30, 14), (8, 8), (17, 11)]):
        sub = folder / ("cats" if i % 2 else "dogs")
        sub.mkdir(parents=True, exist_ok=True)
        paths.append(sub / f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    paths.append(folder / "gray.bmp")
    Image.fromarray(rng.integers(0, 256, (10, 13), dtype=np.uint8)).save(paths[-1])
    (folder / "notes.txt").write_text("not an image")
    return sorted(paths, key=lambda p: str(p.relative_to(folder)))


def by_hand(paths, size, mode, scale, mean, std, nchw, bgr=False):
    """What the preprocessing says, computed here: PIL converts and resizes, numpy does the arithmetic."""
    out = []
    for path in paths:
        image = Image.open(path).convert(mode).resize((size, size), Image.BILINEAR)
        pixels = np.asarray(image, np.float32).reshape(size, size, -1)
        if bgr:
            pixels = pixels[..., ::-1]
        out.append((pixels * np.float32(scale) - np.float32(mean)) / np.float32(std))
    x = np.stack(out)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if nchw else x)


def test_an_image_folder_is_preprocessed_as_stated(tmp_path):
    paths = _images(tmp_path / "images")
    lines = []
    x = load_calibration(tmp_path / "images", {"x": (1, 3, 8, 8)},
                         "scale=1/255, mean=0.5,0.4,0.3, std=0.2,0.25,0.5", say=lines.append)
    expected = by_hand(paths, 8, "RGB", 1 / 255, [0.5, 0.4, 0.3], [0.2, 0.25, 0.5], nchw=True)
    assert x.dtype == np.float32 and x.shape == (6, 3, 8, 8)
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-6)
    assert "6 images, RGB, resized to 8x8" in lines[0] and "float32 NCHW (6, 3, 8, 8)" in lines[0]
    # the default scales pixels to [0, 1]; a one-channel NHWC input reads grayscale
    gray = load_calibration(tmp_path / "images", {"image": (1, 10, 10, 1)})
    np.testing.assert_allclose(gray, by_hand(paths, 10, "L", 1 / 255, 0, 1, nchw=False), rtol=1e-6, atol=1e-6)
    # keras.applications' caffe mode: BGR, the ImageNet mean in BGR order, no scaling; three of six, evenly spaced
    caffe = load_calibration(tmp_path / "images", (1, 9, 9, 3), Preprocess.parse("caffe"), limit=3, say=lines.append)
    np.testing.assert_allclose(caffe, by_hand([paths[0], paths[2], paths[5]], 9, "RGB", 1, [103.939, 116.779, 123.68],
                                              1, nchw=False, bgr=True), rtol=1e-6, atol=1e-4)
    assert "3 of 6 images (evenly spaced in path order), BGR" in lines[1]


def test_preprocess_text_and_its_mistakes():
    assert Preprocess.parse("torch;layout=nchw resize=crop") == Preprocess(
        scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layout="nchw", resize="crop")
    assert Preprocess.parse("tf,scale=1/255") == Preprocess(scale=1 / 255, mean=(1.0,), std=(1.0,))
    assert str(Preprocess()) == "scale=1/255, mean=0, std=1"
    for text, fragment in (("scale=x", "expected a number"), ("mean=1,size=3", "unknown key 'size'"),
                           ("layout=hwc", "layout='hwc'"), ("std=0", "other than 0"), ("mean=", "one or more"),
                           ("scale=1,scale=2", "given twice"), ("1,2", "neither KEY=VALUE")):
        with pytest.raises(InputError, match=fragment):
            Preprocess.parse(text)


def test_a_folder_through_the_cli_gives_the_python_call_with_arrays_made_by_hand(tmp_path):
    """`--calibration FOLDER --preprocess ...` on an NCHW ONNX model prunes as the Python call given the arrays
    computed by hand; the console says what was done in one line."""
    paths = _images(tmp_path / "images")
    src, out = tmp_path / "r.onnx", tmp_path / "slim.onnx"
    onnx.save(resnet_block_model(), src)
    result = invoke("prune", src, "-o", out, "--flops", "0.3", "--calibration", tmp_path / "images",
                    "--preprocess", "torch", "--recalibrate", "none")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("calibration "))
    assert ("6 images, RGB, resized to 8x8, (pixel * 1/255 - 0.485,0.456,0.406) / 0.229,0.224,0.225, float32 NCHW "
            "(6, 3, 8, 8) for input 'x' (N, 3, 8, 8) (channels on axis 1 of the input shape)") in line
    x = by_hand(paths, 8, "RGB", 1 / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], nchw=True)
    python = spa.prune(str(src), flops=0.3, runtime="onnxruntime",
                       criterion=spa.importance.OBSPA(calibration=x, recalibrate=None))
    slim, expected = onnx_weights(onnx.load(out)), onnx_weights(python.model)
    assert sorted(slim) == sorted(expected)
    for name in slim:  # the loader's arithmetic and the test's may differ in the last bit
        np.testing.assert_allclose(slim[name], expected[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_obspa_options_reach_the_criterion(tmp_path):
    src, plan = tmp_path / "m.keras", tmp_path / "plan.json"
    bn_model().save(src)
    result = invoke("prune", src, "-o", tmp_path / "a.keras", "--flops", "0.3", "--hessian", "gaussian",
                    "--samples", "8", "--damping", "0.05", "--recalibrate", "none", "--plan-out", plan)
    assert result.exit_code == 0, result.output
    target = json.loads(plan.read_text())["target"]
    assert target["criterion"] == "obspa"  # implied by the options
    for option in ("hessian='gaussian'", "samples=8", "damping=0.05", "recalibrate=None"):
        assert option in target["criterion_options"], target["criterion_options"]
    result = invoke("prune", src, "-o", tmp_path / "b.keras", "--flops", "0.3", "--criterion", "obspa",
                    "--obspa-steps", "3", "--obspa-budget", "20", "--samples", "4", "--recalibrate", "correct",
                    "--plan-out", plan)
    assert result.exit_code == 0, result.output
    options = json.loads(plan.read_text())["target"]["criterion_options"]
    for option in ("hessian='batchnorm'", "steps=3", "budget=20.0", "samples=4", "recalibrate='correct'"):
        assert option in options, options
    assert "criterion obspa: OBSPA(" in result.output and "kept weights refit" in result.output


def test_calibration_shape_mistakes_are_one_line(tmp_path):
    """Arrays that do not fit the model's input: one line naming the file, the shape expected and the one given,
    exit code 2, no traceback, nothing written."""
    onnx.save(resnet_block_model(), tmp_path / "r.onnx")
    np.save(tmp_path / "nhwc.npy", np.zeros((4, 8, 8, 3), np.float32))
    np.savez(tmp_path / "wrong.npz", image=np.zeros((4, 3, 16, 16), np.float32), y=np.zeros(4))
    np.savez(tmp_path / "keys.npz", a=np.zeros((4, 3, 8, 8), np.float32), b=np.zeros((4, 3, 8, 8), np.float32))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("SPA_DEBUG", None)
    cases = [("nhwc.npy", "--calibration {}: the array has shape (4, 8, 8, 3), but the model's input 'x' takes "
              "(N, 3, 8, 8) (batch first) (the arrays are channels-last, the model reads channels first: "
              "x.transpose(0, 3, 1, 2))"),
             ("wrong.npz", "--calibration {}: array 'image' has shape (4, 3, 16, 16), but the model's input 'x' takes "
              "(N, 3, 8, 8) (batch first)"),
             ("keys.npz", "--calibration {}: keys a, b; the model's input(s) 'x': key the arrays by input name "
              "(missing: 'x')")]
    script = ("import sys\nfrom spa_keras.ui.cli import main\nfor args in sys.argv[1:]:\n    try:\n"
              "        main(args.split('|'))\n    except SystemExit as e:\n        print('exit', e.code)\n")
    runs = ["|".join(["prune", str(tmp_path / "r.onnx"), "-o", str(tmp_path / "out.onnx"), "--flops", "0.3",
                      "--calibration", str(tmp_path / name)]) for name, _ in cases]
    proc = subprocess.run([sys.executable, "-c", script, *runs], capture_output=True, text=True, env=env, timeout=300)
    assert proc.stdout.split() == ["exit", "2"] * len(cases), (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"spa: error: {message.format(tmp_path / name)}" for name, message in cases], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.npz", "nhwc.npy", "r.onnx", "wrong.npz"]


def test_free_sizes_and_folders_that_do_not_fit(tmp_path):
    """Arrays for a model with free height and width must fit the size it is analysed at (the message says how to
    choose it); a folder of images needs an image input."""
    from tests.onnx_graphs import Builder

    b = Builder()
    b.input_shape = [None, 3, None, None]
    model = b.model(b.op("GlobalAveragePool", [b.conv(b.op("Relu", [b.conv("x", 3, 8)]), 8, 4)]), [4, 1, 1])
    onnx.save(model, tmp_path / "free.onnx")
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 16, 16), np.float32))
    result = CliRunner().invoke(cli, ["prune", str(tmp_path / "free.onnx"), "-o", str(tmp_path / "o.onnx"),
                                      "--ratio", "0.3", "--calibration", str(tmp_path / "x.npy")])
    assert result.exit_code == 2
    assert "takes (N, 3, 224, 224) (batch first) (the model's free dimensions were filled for the analysis: " \
           "--input-shape sets them)" in result.output
    result = invoke("prune", tmp_path / "free.onnx", "-o", tmp_path / "o.onnx", "--ratio", "0.3", "--calibration",
                    tmp_path / "x.npy", "--input-shape", "1,3,16,16", "--samples", "2")
    assert result.exit_code == 0, result.output
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        load_calibration(tmp_path / "empty", (1, 3, 8, 8))
    with pytest.raises(InputError, match="feeds an image input of rank 4"):
        load_calibration(tmp_path / "empty", {"tokens": (1, 16)})
    with pytest.raises(InputError, match="has 2 inputs"):
        load_calibration(tmp_path / "x.npy", {"a": (1, 3, 16, 16), "b": (1, 4)})
