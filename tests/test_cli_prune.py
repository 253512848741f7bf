"""`spa analyze` and `spa prune` as a user runs them (in-process through click's runner, real libraries)."""

import json

import onnx
from click.testing import CliRunner

import spa_keras as spa
from spa_keras.ui.cli import cli
from tests.oracles import independent_params
from tests.test_engine_invariants import resnet_block_model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_analyze_prints_groups(tmp_path):
    path = tmp_path / "resnet.onnx"
    onnx.save(resnet_block_model(), path)
    result = invoke("analyze", path)
    assert result.exit_code == 0, result.output
    assert "channel groups" in result.output and "prunable" in result.output


def test_prune_writes_model_and_plan_and_replays(tmp_path):
    path = tmp_path / "resnet.onnx"
    onnx.save(resnet_block_model(), path)
    before = path.read_bytes()
    out, plan = tmp_path / "slim.onnx", tmp_path / "plan.json"
    result = invoke("prune", "--criterion", "l1", path, "-o", out, "--flops", "0.4", "--plan-out", plan)
    assert result.exit_code == 0, result.output
    assert path.read_bytes() == before  # the input is untouched (invariant 4)
    slim = onnx.load(out)
    onnx.checker.check_model(slim)
    data = json.loads(plan.read_text())
    assert data["format"] == "spa-keras plan 1" and data["removed"]
    again = tmp_path / "again.onnx"
    result = invoke("prune", path, "-o", again, "--plan", plan)
    assert result.exit_code == 0, result.output
    assert independent_params(onnx.load(again)) == independent_params(slim)
    assert spa.count(str(again)).flops == spa.count(str(out)).flops


def test_prune_errors_are_one_line(tmp_path):
    path = tmp_path / "resnet.onnx"
    onnx.save(resnet_block_model(), path)
    runner = CliRunner()
    result = runner.invoke(cli, ["prune", str(path), "-o", str(tmp_path / "x.onnx"), "--ratio", "1.5"])
    assert result.exit_code == 2 and "ratio=1.5: a fraction removed, in [0, 1)" in result.output
    result = runner.invoke(cli, ["prune", str(path), "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "give a target" in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_prune_keras_file_to_keras_and_tflite(tmp_path):
    import keras

    from tests import models

    src = tmp_path / "small.keras"
    models.small_cnn().save(src)
    for out in ("slim.keras", "slim.tflite"):
        result = invoke("prune", "--criterion", "l1", src, "-o", tmp_path / out, "--flops", "0.3")
        assert result.exit_code == 0, result.output
        assert "verified" in result.output
    slim = keras.models.load_model(tmp_path / "slim.keras")
    assert slim.count_params() < keras.models.load_model(src).count_params()
    assert (tmp_path / "slim.tflite").stat().st_size > 0


def test_prune_options_reach_the_plan(tmp_path):
    """--criterion, --steps, --round-to and --local end up in the plan the CLI writes, and the plan replays."""
    import keras

    from tests import models

    src = tmp_path / "small.keras"
    models.small_cnn().save(src)
    out, plan = tmp_path / "slim.keras", tmp_path / "plan.json"
    result = invoke("prune", src, "-o", out, "--flops", "0.3", "--criterion", "fpgm", "--steps", "3",
                    "--round-to", "2", "--plan-out", plan)
    assert result.exit_code == 0, result.output
    target = json.loads(plan.read_text())["target"]
    assert (target["criterion"], target["steps"], target["round_to"]) == ("fpgm", 3, 2)
    again = tmp_path / "again.keras"
    assert invoke("prune", src, "-o", again, "--plan", plan).exit_code == 0
    assert keras.models.load_model(again).count_params() == keras.models.load_model(out).count_params()


def compiled_cnn(path):
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.ReLU()(layers.Conv2D(16, 3, name="a_rather_long_layer_name_for_the_first_convolution")(inputs))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(16, 3, name="conv2")(x))
    model = keras.Model(inputs, layers.Dense(4, name="head")(x))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.save(path)
    return model


def test_prune_refuses_to_replace_its_input(tmp_path):
    src = tmp_path / "a.keras"
    compiled_cnn(src)
    before = src.read_bytes()
    for args, fragment in ((["-o", src], "also the input model"),
                           (["-o", tmp_path / "b.keras", "--plan-out", src], "also the input model"),
                           (["-o", tmp_path / "b.keras", "--plan-out", tmp_path / "b.keras"],
                            "also the output model")):
        result = invoke("prune", src, *args, "--flops", "0.3")
        assert result.exit_code == 2 and fragment in result.output, result.output
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.keras"]


def test_slim_keras_written_by_the_cli_keeps_the_compile_configuration(tmp_path):
    """The source was saved compiled: the slim .keras loads compiled alike (optimizer class and settings, loss,
    metrics) and trains with `fit` straight away."""
    import keras
    import numpy as np

    src, out = tmp_path / "a.keras", tmp_path / "slim.keras"
    compiled_cnn(src)
    assert invoke("prune", "--criterion", "l1", src, "-o", out, "--flops", "0.3").exit_code == 0
    slim = keras.models.load_model(out)
    assert slim.compiled and type(slim.optimizer).__name__ == "SGD"
    config = slim.get_compile_config()
    assert config["loss"] == "sparse_categorical_crossentropy" and config["metrics"] == ["accuracy"]
    assert float(config["optimizer"]["config"]["momentum"]) == 0.9
    history = slim.fit(np.zeros((4, 16, 16, 3)), np.zeros(4), verbose=0)
    assert "accuracy" in history.history


def test_argument_mistakes_are_one_line_and_come_before_tensorflow(tmp_path):
    """Bad options, unknown or foreign inputs, outputs the source cannot become: one line, exit 2, and no
    TensorFlow import (it takes seconds)."""
    import subprocess
    import sys

    src = tmp_path / "a.keras"
    compiled_cnn(src)
    onnx.save(resnet_block_model(), tmp_path / "r.onnx")
    (tmp_path / "x.pt").write_bytes(b"\x80\x02")
    cases = [(["prune", src, "-o", tmp_path / "b.keras", "--flops", "0.3", "--round-to", "0"], "--round-to"),
             (["prune", src, "-o", tmp_path / "b.keras", "--ratio", "2"], "ratio=2: a fraction removed"),
             (["prune", tmp_path / "x.pt", "-o", tmp_path / "b.onnx", "--ratio", "0.2"], "torch.onnx.export"),
             (["prune", tmp_path / "r.onnx", "-o", tmp_path / "b-symbol.json", "--ratio", "0.2"], "from '.onnx'"),
             (["prune", src, "-o", tmp_path / "b.onnx", "--ratio", "0.2", "--precision", "int8"], ".tflite outputs"),
             (["prune", src, "-o", src, "--ratio", "0.2"], "also the input model"),
             (["analyze", tmp_path / "x.pt"], "spa analyze reads"),
             (["prune", src, "-o", tmp_path / "b.keras", "--flops", "0.3", "--round-to", "eight"], "'auto' or a whole"),
             (["prune", src, "-o", tmp_path / "b.keras", "--flops", "0.3", "--runtime", "coreml"], "--runtime"),
             (["prune", src, "-o", tmp_path / "b.keras", "--flops", "0.3", "--plot", tmp_path / "w.txt"], ".png"),
             (["analyze", src, "--plot", tmp_path / "no" / "w.png"], "does not exist"),
             (["prune", src, "-o", tmp_path / "b.keras"], "give a target: --ratio, --flops, --params or --latency"),
             (["prune", src, "-o", tmp_path / "b.keras", "--ratio", "0.3", "--latency", "0.2"],
              "--latency is a target of its own: give it without --ratio"),
             (["prune", src, "-o", tmp_path / "b.keras", "--flops", "0.3", "--criterion", "l1", "--calibration",
               tmp_path / "x.pt"], "--calibration gives OBSPA's Hessians their inputs; --criterion l1 reads no data"),
             (["prune", src, "-o", tmp_path / "b.keras", "--flops", "0.3", "--calibration", tmp_path / "x.pt"],
              "an .npy or .npz of model inputs, or a folder of images"),
             (["prune", src, "-o", tmp_path / "b.keras", "--flops", "0.3", "--preprocess", "torch"],
              "--preprocess says how the images of a --calibration folder become model inputs"),
             (["prune", src, "-o", tmp_path / "b.keras", "--flops", "0.3", "--preprocess", "scale=1/255,size=3",
               "--calibration", tmp_path], "unknown key 'size'"),
             (["prune", src, "-o", tmp_path / "b.keras", "--flops", "0.3", "--hessian", "identity", "--obspa-steps",
               "5"], "--obspa-steps tunes the synthetic inputs of --hessian batchnorm")]
    script = ("import sys\nfrom spa_keras.ui.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
              "    print('exit', e.code, 'tensorflow' in sys.modules)\n")
    for args, fragment in cases:
        proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True)
        assert proc.stdout.strip() == "exit 2 False", (args, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("spa: error: ") and fragment in lines[0], (args, lines)
    assert "tflite" not in proc.stderr and "MXNet" not in proc.stderr  # only what the command reads


def test_wrong_rank_input_shape_on_a_keras_model_is_one_line(tmp_path):
    src = tmp_path / "a.keras"
    compiled_cnn(src)
    result = invoke("prune", src, "-o", tmp_path / "b.keras", "--flops", "0.3", "--input-shape", "1,16,16")
    assert result.exit_code == 2, result.output
    assert "input 'image' has rank 4 (?, 16, 16, 3), but --input-shape gives 3 dimensions" in result.output


def test_analyze_piped_is_clean_and_names_layers(tmp_path):
    """Piped (not a terminal): no TensorFlow log lines on stderr, long layer names whole in the table, and the
    output group blocked by the graph output named after its layer, not a Keras tensor."""
    import subprocess
    import sys

    src = tmp_path / "a.keras"
    compiled_cnn(src)
    proc = subprocess.run([sys.executable, "-m", "spa_keras.ui.cli", "analyze", str(src)], capture_output=True,
                          text=True, env={k: v for k, v in __import__("os").environ.items()
                                          if k not in ("COLUMNS", "TF_CPP_MIN_LOG_LEVEL")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "a_rather_long_layer_name_for_the_first_convolution/kernel" in proc.stdout
    assert "head (output)" in proc.stdout and "keras_tensor" not in proc.stdout


def test_prune_with_obspa_writes_the_new_weights_beside_the_plan(tmp_path):
    """`--criterion obspa` (data-free): the plan says kept weights were refit and keeps their values in
    plan.weights.npz; replaying it gives the same model; without that file the replay is refused."""
    import keras
    import numpy as np

    from tests.test_obspa import bn_model

    src, out, plan = tmp_path / "m.keras", tmp_path / "slim.keras", tmp_path / "plan.json"
    bn_model().save(src)
    result = invoke("prune", src, "-o", out, "--flops", "0.3", "--criterion", "obspa", "--plan-out", plan)
    assert result.exit_code == 0, result.output
    data = json.loads(plan.read_text())
    assert data["updates"] and "reconstructed" in data["target"] and "OBSPA(" in data["target"]["criterion_options"]
    assert (tmp_path / "plan.weights.npz").exists()
    again = tmp_path / "again.keras"
    assert invoke("prune", src, "-o", again, "--plan", plan).exit_code == 0
    x = np.random.default_rng(0).uniform(-1, 1, (2, 10, 10, 3)).astype("float32")
    a, b = keras.models.load_model(out)(x), keras.models.load_model(again)(x)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    (tmp_path / "plan.weights.npz").unlink()
    result = invoke("prune", src, "-o", tmp_path / "third.keras", "--plan", plan)
    assert result.exit_code == 2 and "weights.npz" in result.output


def test_plots_and_the_runtime_the_output_implies(tmp_path):
    """--plot draws a PNG (read back with Pillow) for analyze and prune; `--round-to auto` (the default) aims at
    the runtime of the output file (.onnx: onnxruntime) unless --runtime says otherwise, and the plan says so."""
    from PIL import Image

    from tests import models

    src = tmp_path / "small.keras"
    models.small_cnn().save(src)
    picture, plan = tmp_path / "widths.png", tmp_path / "plan.json"
    result = invoke("prune", "--criterion", "l1", src, "-o", tmp_path / "slim.onnx", "--flops", "0.3", "--plot",
                    picture, "--plan-out", plan)
    assert result.exit_code == 0, result.output
    target = json.loads(plan.read_text())["target"]
    assert (target["round_to"], target["runtime"]) == ("auto", "onnxruntime") and target["channel_multiple"] >= 1
    with Image.open(picture) as image:
        assert image.format == "PNG" and min(image.size) > 300
    result = invoke("prune", "--criterion", "l1", src, "-o", tmp_path / "slim2.onnx", "--flops", "0.3", "--runtime",
                    "tflite", "--plan-out", plan)
    assert result.exit_code == 0 and json.loads(plan.read_text())["target"]["runtime"] == "tflite"
    result = invoke("analyze", src, "--plot", tmp_path / "analysis.svg")
    assert result.exit_code == 0 and (tmp_path / "analysis.svg").read_text().lstrip().startswith("<?xml")


FRESH_KERAS_LOAD = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
from spa_keras.bridges import keras_io
x, paths = np.load(sys.argv[1]), sys.argv[2:]
for path in paths:  # spa's own loader, in a process where nothing registered spa-keras's layers
    np.save(path + ".spa.npy", next(iter(keras_io.run(keras_io.load(path), {"x": x}).values())))
import keras
import spa_keras.bridges.onnx_to_keras  # what the note tells plain Keras users
for path in paths:
    np.save(path + ".keras.npy", keras.saving.load_model(path).predict(x, verbose=0))
"""


def test_onnx_pruned_to_keras_files_load_in_a_fresh_process(tmp_path):
    """An ONNX constant varying along H and W rebuilds as spa-keras's ConstantAffine layer. The written .h5/.keras
    was verified in the process whose rebuild had registered that layer, so it loaded there, and nowhere else: in a
    fresh process neither Keras nor spa's loader knew it. Now the loader provides spa's own layers and the write is
    verified with them hidden, as in a fresh process; a note says how plain Keras loads the file."""
    import os
    import subprocess
    import sys

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from spa_keras.bridges import onnx_io

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name) for name, shape in
             (("w1", (8, 3, 3, 3)), ("position", (1, 8, 8, 8)), ("w2", (4, 8, 3, 3)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "position"], ["a"], name="position_add"),
             helper.make_node("Conv", ["a", "w2"], ["y"], name="conv2", pads=[1] * 4)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    plan = tmp_path / "plan.json"
    assert invoke("prune", "--criterion", "l1", tmp_path / "m.onnx", "-o", tmp_path / "slim.onnx", "--ratio", "0.3",
                  "--round-to", "1", "--plan-out", plan).exit_code == 0
    outputs = [tmp_path / "slim.h5", tmp_path / "slim.keras"]
    results = [invoke("prune", tmp_path / "m.onnx", "-o", out, "--plan", plan) for out in outputs]
    assert [r.exit_code for r in results] == [0, 0], [r.output for r in results]
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", FRESH_KERAS_LOAD, tmp_path / "x.npy", *outputs],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reference = onnx_io.run(str(tmp_path / "slim.onnx"), {"x": x})["y"]
    assert onnx.load(tmp_path / "slim.onnx").graph.initializer[0].dims[0] < 8  # channels were removed
    for out in outputs:
        for loader in ("spa", "keras"):
            np.testing.assert_allclose(np.load(f"{out}.{loader}.npy"), reference, rtol=1e-4, atol=1e-4)
    assert all("holds spa-keras's ConstantAffine layer (position_add" in r.output for r in results)
