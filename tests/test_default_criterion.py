"""The default criterion: OBSPA for a model pruned as it is (`spa.prune`, `spa prune`), L1 where training follows or
rescoring repeats (SPACallback, `steps` > 1) and where OBSPA cannot make up inputs (not floating point); the CLI
says which one ran."""

import json

import onnx
from click.testing import CliRunner

import spa_keras as spa
from spa_keras.importance import DEFAULT_CRITERION, TRAINING_CRITERION, default_criterion
from spa_keras.ui.cli import cli
from tests.test_engine_invariants import resnet_block_model
from tests import models
from tests.test_obspa import bn_model, conv_model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def token_model():
    import keras
    from keras import layers

    inputs = keras.Input((6,), dtype="int32", name="ids")
    x = layers.GlobalAveragePooling1D()(layers.Embedding(50, 16, name="emb")(inputs))
    x = layers.Dense(12, activation="relu", name="hidden")(x)
    return keras.Model(inputs, layers.Dense(3, name="out")(x))


def feature_map_model():
    """No BatchNorm and no class output (a feature map comes out)."""
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, layers.Conv2D(4, 3)(layers.Conv2D(8, 3, activation="relu")(inputs)))


def test_spa_prune_defaults_to_obspa_and_to_l1_where_training_follows_or_obspa_cannot_run():
    """(`spa prune` without --criterion, below, runs the default end to end: the CLI hands prune() None.)"""
    assert (DEFAULT_CRITERION, TRAINING_CRITERION) == ("obspa", "l1")
    model = bn_model()
    assert default_criterion(spa.analyze(model)) == "obspa"
    assert spa.prune(model, flops=0.3, steps=2).plan.target.criterion == "l1"  # rescoring between steps
    tokens = token_model()
    assert default_criterion(spa.analyze(tokens)) == "l1"  # token ids cannot be made up
    assert spa.prune(tokens, ratio=0.3).plan.target.criterion == "l1"
    assert default_criterion(spa.analyze(models.small_cnn())) == "obspa"
    # no BatchNorm: inputs are optimised for the class output alone; with no class output either, only noise is left
    assert default_criterion(spa.analyze(conv_model("same", 1))) == "obspa"
    assert default_criterion(spa.analyze(feature_map_model())) == "l1"
    assert default_criterion(spa.analyze(resnet_block_model())) == "obspa"  # ONNX: identity Hessians, with a note
    assert spa.SPACallback(flops=0.5).criterion == "l1"  # the callback keeps its own default


def test_spa_prune_without_criterion_says_it_ran_obspa(tmp_path):
    src, plan = tmp_path / "m.keras", tmp_path / "plan.json"
    bn_model().save(src)
    result = invoke("prune", src, "-o", tmp_path / "slim.keras", "--flops", "0.3", "--plan-out", plan)
    assert result.exit_code == 0, result.output
    assert "criterion obspa (the default: for a model used without fine-tuning; --criterion l1" in result.output
    target = json.loads(plan.read_text())["target"]
    assert target["criterion"] == "obspa" and target["reconstructed"]  # the kept weights were refit
    result = invoke("prune", src, "-o", tmp_path / "slim2.keras", "--flops", "0.3", "--steps", "2")
    assert result.exit_code == 0 and "criterion l1 (the default where data-free OBSPA does not apply" in \
        result.output, result.output
    result = invoke("prune", src, "-o", tmp_path / "slim3.keras", "--flops", "0.3", "--criterion", "l1")
    assert result.exit_code == 0 and "criterion l1\n" in result.output, result.output


def test_onnx_without_calibration_is_told_in_the_clis_words(tmp_path):
    """An ONNX model whose BatchNorm was folded gives data-free OBSPA only its class output to optimise inputs for
    (OBSPA stays the default, as for a Keras model without BatchNorm), and the note says how to give images in the
    spelling of the command line."""
    from tests.onnx_graphs import fold_batchnorm

    folded = fold_batchnorm(resnet_block_model())
    assert default_criterion(spa.analyze(folded)) == "obspa" and default_criterion(spa.analyze(resnet_block_model())) \
        == "obspa"
    onnx.save(folded, tmp_path / "r.onnx")
    result = CliRunner().invoke(cli, ["prune", str(tmp_path / "r.onnx"), "-o", str(tmp_path / "s.onnx"), "--ratio",
                                      "0.3", "--criterion", "obspa"])
    assert result.exit_code == 0, result.output
    assert "spa: note: OBSPA: no BatchNormalization node left" in result.output, result.output
    assert "give --calibration" in result.output and "calibration=" not in result.output
