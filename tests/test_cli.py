"""The `spa` command as a user runs it: a real process, its exit code, stdout, stderr and the files it leaves."""

import os
import re
import subprocess
import sys

import pytest

from tests import models


def spa(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PATH=os.path.dirname(sys.executable) + os.pathsep +
               os.environ.get("PATH", ""))
    env.pop("SPA_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "spa_keras.ui.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def relative_diffs(stdout):
    return [float(x) for x in re.findall(r"relative ([0-9.e+-]+)", stdout)]


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("spa: error: "), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---- verified round trips (acceptance) ------------------------------------------------------------------------

def test_h5_to_onnx_then_tflite_and_savedmodel(fer_h5, tmp_path):
    proc = spa("convert", fer_h5, tmp_path / "fer.onnx")
    assert proc.returncode == 0, proc.stderr
    assert relative_diffs(proc.stdout) and max(relative_diffs(proc.stdout)) <= 1e-4
    assert proc.stderr.strip() == ""
    for out in ("fer.tflite", "fer_saved"):
        proc = spa("convert", tmp_path / "fer.onnx", tmp_path / out)
        assert proc.returncode == 0, proc.stderr
        assert max(relative_diffs(proc.stdout)) <= 1e-4
    assert (tmp_path / "fer_saved" / "saved_model.pb").exists()


def test_keras_to_tflite(tmp_path):
    models.small_cnn().save(tmp_path / "small.keras")
    proc = spa("convert", tmp_path / "small.keras", tmp_path / "small.tflite")
    assert proc.returncode == 0, proc.stderr
    assert max(relative_diffs(proc.stdout)) <= 1e-4
    assert (tmp_path / "small.tflite").stat().st_size > 0


def test_mxnet_prefix_to_onnx(mxnet_resnet18, tmp_path):
    proc = spa("convert", mxnet_resnet18, tmp_path / "r18.onnx", "--epoch", "0", "--input-shape", "1,3,32,32")
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime vs mxnet" in proc.stdout and max(relative_diffs(proc.stdout)) <= 1e-4


# ---- bad inputs: one line, non-zero exit, nothing written (acceptance) --------------------------------------

def _no_output_left(directory, expected):
    assert sorted(os.listdir(directory)) == sorted(expected)


def test_truncated_onnx(fer_h5, tmp_path):
    assert spa("convert", fer_h5, tmp_path / "full.onnx").returncode == 0
    data = (tmp_path / "full.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    proc = spa("convert", tmp_path / "cut.onnx", tmp_path / "out.tflite")
    assert_one_line_error(proc, "cut.onnx")
    _no_output_left(tmp_path, ["full.onnx", "cut.onnx"])


def test_text_file_named_onnx(tmp_path):
    (tmp_path / "notes.onnx").write_text("this is not a model\nbut a note\n")
    proc = spa("convert", tmp_path / "notes.onnx", tmp_path / "out.tflite")
    assert_one_line_error(proc, "notes.onnx", "ONNX")
    _no_output_left(tmp_path, ["notes.onnx"])


def test_missing_params_file(mxnet_resnet18, tmp_path):
    import shutil

    shutil.copy(mxnet_resnet18 + "-symbol.json", tmp_path / "net-symbol.json")
    proc = spa("convert", tmp_path / "net", tmp_path / "net.onnx", "--input-shape", "1,3,32,32")
    assert_one_line_error(proc, "net-0000.params", "not found")
    _no_output_left(tmp_path, ["net-symbol.json"])


def test_unknown_extension(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"\x80\x02weights")
    assert_one_line_error(spa("convert", tmp_path / "model.pt", tmp_path / "out.onnx"), "model.pt", "'.pt'")
    (tmp_path / "model.onnx").write_bytes(b"")
    assert_one_line_error(spa("convert", tmp_path / "model.onnx", tmp_path / "out.pdf"), "out.pdf", "'.pdf'")
    _no_output_left(tmp_path, ["model.pt", "model.onnx"])


def test_output_directory_missing(fer_h5, tmp_path):
    proc = spa("convert", fer_h5, tmp_path / "no" / "such" / "dir" / "fer.onnx")
    assert_one_line_error(proc, "does not exist")
    _no_output_left(tmp_path, [])


def test_lambda_layer_is_refused_not_executed(tmp_path):
    import keras

    marker = tmp_path / "executed"
    inputs = keras.Input((4,), name="x")
    # If the stored function ever ran, it would create `marker`.
    double = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t * 2)[1]")  # no closure: Keras stores it
    outputs = keras.layers.Lambda(double, name="double")(inputs)
    model = keras.Model(inputs, outputs)
    marker.unlink(missing_ok=True)
    for name in ("lam.keras", "lam.h5"):
        model.save(tmp_path / name)
        proc = spa("convert", tmp_path / name, tmp_path / "out.onnx")
        assert_one_line_error(proc, name, "Lambda layer(s) double", "safe_mode")
    assert not marker.exists()
    _no_output_left(tmp_path, ["lam.keras", "lam.h5"])


def test_debug_shows_traceback(tmp_path):
    (tmp_path / "notes.onnx").write_text("not a model")
    proc = spa("--debug", "convert", tmp_path / "notes.onnx", tmp_path / "out.tflite")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.parametrize("args", [["--help"], ["convert", "--help"]])
def test_help(args):
    proc = spa(*args)
    assert proc.returncode == 0 and "Usage:" in proc.stdout


def test_progress_is_plain_lines_on_stderr_when_not_a_terminal(capsys, monkeypatch):
    """Long work reports progress as 'what: k/total (s)' lines on stderr in logs and CI (no terminal), and stays
    silent for work that ends quickly."""
    from spa_keras.common import console

    with console.progress_bar(3, "quick") as advance:
        for _ in range(3):
            advance()
    assert "quick" not in capsys.readouterr().err
    monkeypatch.setattr(console._PlainProgress, "QUIET", 0.0)
    with console.progress_bar(3, "reconstructing") as advance:  # lines at most every EVERY seconds, and the last
        for _ in range(3):
            advance()
    assert [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()] == ["reconstructing: 3/3"]
    monkeypatch.setattr(console._PlainProgress, "EVERY", 0.0)
    assert list(console.track([1, 2], "scoring")) == [1, 2]
    assert [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()] == ["scoring: 1/2", "scoring: 2/2"]
