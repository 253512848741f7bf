"""OBSPA's accuracy goal on a few networks of the zoo (benchmarks/zoo_models.py; the full grid is
benchmarks/obspa_zoo.py). Without fine-tuning, at the default round_to, on 2,000 test images:

- data-free OBSPA within 3 points of the unpruned network at -30% FLOPs (5 for a network without BatchNorm) and
  within 8 at -50%;
- OBSPA with 256 real training images within 2 and 5 points;
- neither below L1 at the same reduction.

The models are trained on first use (a few minutes each) and cached in benchmarks/results/zoo/ (env
SPA_ZOO_CACHE). Marker `zoo`: `make test-zoo` runs it, the default suite does not.
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

MODELS = ("issue_cnn", "resnet_bn", "mobilenet_v3", "plain_cnn", "convnext", "torch_bn_kept")
REDUCTIONS = (0.3, 0.5)
TEST_IMAGES = 2000
_STATE: dict = {}


def _model(name):
    """(model, calibration, synthetic inputs, score, unpruned accuracy) of a zoo network, loaded once."""
    if name in _STATE:
        return _STATE[name]
    import keras

    import obspa_zoo
    import zoo_models

    path = zoo_models.trained(name, 0)
    meta = zoo_models.metadata(name, 0)
    (x_train, _), (x_test, y_test) = zoo_models.load_dataset(meta["dataset"])
    x_test, y_test = x_test[:TEST_IMAGES], y_test[:TEST_IMAGES]
    calibration = x_train[np.random.default_rng(0).choice(len(x_train), 256, replace=False)]
    if zoo_models.is_onnx(name):
        model, synthetic = path, None
        calibration = np.ascontiguousarray(calibration.transpose(0, 3, 1, 2))

        def score(m):
            return zoo_models.onnx_accuracy(m, x_test, y_test)
    else:
        model = keras.models.load_model(path)
        synthetic = obspa_zoo.CachedInputs(model, None)  # OBSPA(budget=None)'s inputs, made once when needed

        def score(m):
            return zoo_models.keras_accuracy(m, x_test, y_test)
    _STATE[name] = (model, calibration, synthetic, score, score(model))
    return _STATE[name]


def _accuracy(name, method, reduction):
    import obspa_zoo

    key = (name, method, reduction)
    if key not in _STATE:
        model, calibration, synthetic, score, _ = _model(name)
        if method == "obspa" and synthetic is not None:
            synthetic.load_or_make()
        result, _, _, _ = obspa_zoo.prune_cell(name, model, method, reduction, "auto", calibration, synthetic)
        _STATE[key] = score(result.model)
    return _STATE[key]


@pytest.mark.zoo
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("method", ["obspa", "obspa+data"])
@pytest.mark.parametrize("name", MODELS)
def test_obspa_meets_the_accuracy_goal_without_fine_tuning(name, method, reduction):
    import obspa_zoo

    unpruned = _model(name)[4]
    accuracy, l1 = _accuracy(name, method, reduction), _accuracy(name, "l1", reduction)
    marks = obspa_zoo.misses(name, method, reduction, accuracy, unpruned, l1)
    assert marks == "", (f"{name} {method} -{100 * reduction:.0f}% FLOPs: {100 * accuracy:.2f}% against "
                         f"{100 * unpruned:.2f}% unpruned and {100 * l1:.2f}% with L1 ({marks})")
