"""`spa analyze` and `spa prune` as a user runs them (in-process through click's runner, real libraries)."""

import json

import onnx
from click.testing import CliRunner

import spa_keras as spa
from spa_keras.cli import cli
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
    result = invoke("prune", path, "-o", out, "--flops", "0.4", "--plan-out", plan)
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
        result = invoke("prune", src, "-o", tmp_path / out, "--flops", "0.3")
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
