"""FLOPs and parameter targets land within ±2% on keras.applications CNNs (Keras front-end), checked against counts
that do not come from spa: MACs computed here from the slim Keras model's own layers, parameters from
`count_params()`. The full sweep (4 models × 3 targets × 2 kinds) is under `-m zoo`; two cases run by default.
"""

import math

import pytest

import spa_keras as spa
from tests import models

MODELS = ("ResNet50", "MobileNetV2", "DenseNet121", "EfficientNetB0")
TARGETS = (0.3, 0.5, 0.7)
DEFAULT = {("ResNet50", "flops", 0.5), ("MobileNetV2", "params", 0.3)}


def layer_macs(model):
    """Multiply-accumulates of the convolutions and dense layers of a Keras model at batch size 1: kernel size ×
    output positions (every output position applies the whole kernel once, grouped convs included)."""
    macs = 0
    for layer in models.flat_layers(model):
        kind = type(layer).__name__
        if kind in ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "Dense"):
            kernels = [layer.kernel]
        elif kind == "SeparableConv2D":
            kernels = [layer.depthwise_kernel, layer.pointwise_kernel]
        else:
            continue
        positions = math.prod(layer.output.shape[1:-1])  # spatial positions (1 for a Dense on vectors)
        macs += positions * sum(math.prod(k.shape) for k in kernels)
    return macs


_CACHE = {}


def app(name):
    import keras

    if name not in _CACHE:
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, name)(input_shape=(64, 64, 3), weights=None, classifier_activation=None)
        model = models.randomize_keras(model)
        _CACHE[name] = model, spa.analyze(model)
    return _CACHE[name]


CASES = [pytest.param(name, kind, target, marks=[] if (name, kind, target) in DEFAULT else [pytest.mark.zoo])
         for name in MODELS for kind in ("flops", "params") for target in TARGETS]


@pytest.mark.parametrize("name,kind,target", CASES)
def test_target_lands(name, kind, target):
    model, analysis = app(name)
    result = spa.prune(model, analysis=analysis, **{kind: target})
    slim = result.model
    if kind == "flops":
        before, after = layer_macs(model), layer_macs(slim)
        assert 2 * before == result.before.flops and 2 * after == result.after.flops  # spa's count agrees
    else:
        before, after = model.count_params(), slim.count_params()
        assert after == result.after.params
    reached = 1 - after / before
    assert abs(reached - target) <= 0.02, f"{name} {kind}={target}: removed {reached:.4f}"


@pytest.mark.parametrize("global_ranking", [True, False])
def test_round_to_keeps_multiples_and_the_best_channels(global_ranking):
    """round_to=8: every pruned group keeps a multiple of 8 channels; the ratio target is still reached (channels
    removed counted after rounding); inside each group no kept channel scores below a removed one (the channels
    given back by rounding are the best of those that would have gone)."""
    import numpy as np

    model, analysis = app("MobileNetV2")
    scores = spa.importance.score_groups("l1", analysis)
    result = spa.prune(model, ratio=0.3, round_to=8, global_ranking=global_ranking, analysis=analysis)
    removed = result.plan.removed
    assert removed
    total = 0
    for group, s in zip(analysis.groups, scores):
        gone = removed.get(group.key, [])
        total += len(gone)
        if not gone:
            continue
        assert (group.channels - len(gone)) % 8 == 0, (group.key, group.channels, len(gone))
        kept = np.setdiff1d(np.flatnonzero(~group.blocked), gone)
        assert s[gone].max() <= s[kept].min(), group.key
    prunable = sum(g.prunable for g in analysis.groups)
    assert total >= round(0.3 * prunable)
    assert result.model.count_params() == result.after.params
