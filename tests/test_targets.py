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
    result = spa.prune(model, analysis=analysis, **{kind: target}, criterion="l1")
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
    result = spa.prune(model, ratio=0.3, round_to=8, global_ranking=global_ranking, analysis=analysis, criterion="l1")
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


def conv_chain(widths, seed):
    """Conv(3x3, same) stride 1 then 2, 2, ... with ReLU, global pooling and Dense(10), on 32x32x3 inputs."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for i, width in enumerate(widths):
        x = layers.ReLU()(layers.Conv2D(width, 3, padding="same", strides=2 if i else 1, name=f"conv{i}")(x))
    return keras.Model(inputs, layers.Dense(10, name="head")(layers.GlobalAveragePooling2D()(x)))


def chain_macs(widths, kept):
    """MACs of `conv_chain(widths)` with `kept` channels per conv, counted by hand."""
    macs, cin, size = 0, 3, 32
    for i, c in enumerate(kept):
        size = size if i == 0 else (size + 1) // 2
        macs += size * size * 9 * cin * c
        cin = c
    return macs + cin * 10


@pytest.mark.parametrize("widths", [(16, 32, 64), (16, 16, 32), (8, 16, 32, 32), (24, 48, 24), (16, 32),
                                    (32, 16, 64)])
def test_round_to_lands_within_two_percent_where_a_layout_exists(widths):
    """Every layout of multiples of 8 (within max_per_group) is enumerated by hand: when one lies within ±2% of the
    FLOPs target, the plan lands within ±2%; when none does, a warning says where it landed."""
    import itertools
    import warnings

    model = conv_chain(widths, seed=0)
    analysis = spa.analyze(model)
    base = chain_macs(widths, widths)
    choices = [range(max(8, math.ceil(0.1 * w / 8) * 8), w + 1, 8) for w in widths]
    layouts = [1 - chain_macs(widths, kept) / base for kept in itertools.product(*choices)]
    for target in (0.3, 0.5, 0.7):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = spa.prune(model, flops=target, round_to=8, analysis=analysis, criterion="l1")
        kept = [layer.filters for layer in result.model.layers if type(layer).__name__ == "Conv2D"]
        assert all(k % 8 == 0 for k in kept)
        reached = 1 - chain_macs(widths, kept) / base
        assert reached == pytest.approx(result.plan.target.reached, abs=1e-5)
        if any(abs(r - target) <= 0.02 for r in layouts):
            assert abs(reached - target) <= 0.02, (widths, target, kept, reached)
        else:
            assert any(f"removes {reached:.1%}" in str(w.message) for w in caught), (widths, target, reached)


def kept_layouts(widths, multiple, max_per_group=0.9):
    """Every kept-channel layout of `conv_chain(widths)` that `round_to="auto"` allows with `multiple`: a group
    keeps a multiple of the largest power of two (at most `multiple`) that fits four times in it, or stays whole;
    at least the max_per_group floor stays."""
    import itertools

    choices = []
    for w in widths:
        step = max([1] + [2 ** k for k in range(8) if 2 ** k <= multiple and w >= 2 ** (k + 2)])
        floor = w - min(math.floor(max_per_group * w), w - 1)
        choices.append([k for k in range(1, w + 1) if k >= floor and (k == w or k % step == 0)])
    return list(itertools.product(*choices))


@pytest.mark.parametrize("widths,target", [((64, 128, 256), 0.5), ((48, 96, 96), 0.3), ((16, 32), 0.3), ((16, 16), 0.4),
                                           ((16, 24, 16), 0.62)])
def test_round_to_auto_keeps_the_runtime_multiple_or_the_largest_that_lands(widths, target):
    """The default `round_to="auto"`: pruned groups keep multiples of `channel_multiple()` (16 on x86, 8 on ARM);
    when no such layout lies within ±2% of the target (enumerated by hand), a halved multiple that has one is used
    and recorded in the plan (the largest, where the block search finds it), and the plan lands within ±2%."""
    from spa_keras.planning.runtimes import channel_multiple

    model = conv_chain(widths, seed=1)
    result = spa.prune(model, flops=target, criterion="l1")
    kept = [layer.filters for layer in result.model.layers if type(layer).__name__ == "Conv2D"]
    base = chain_macs(widths, widths)
    reached = 1 - chain_macs(widths, kept) / base
    assert abs(reached - target) <= 0.02, (widths, kept, reached)
    used = result.plan.target.channel_multiple
    assert result.plan.target.round_to == "auto"
    assert tuple(kept) in kept_layouts(widths, used)
    lands = lambda m: any(abs(1 - chain_macs(widths, k) / base - target) <= 0.02  # noqa: E731
                          for k in kept_layouts(widths, m))
    multiple = channel_multiple()
    assert lands(used)
    if widths == (64, 128, 256):
        assert used == multiple
    elif widths != (16, 24, 16):  # there the block search misses a layout of 4s within 2% (it is not exhaustive)
        larger = [m for m in (multiple, multiple // 2, multiple // 4, multiple // 8) if m > used]
        assert not any(lands(m) for m in larger), (widths, used)


def test_runtimes_pick_multiples_and_refuse_unknown_runtimes():
    from spa_keras.common.errors import InputError
    from spa_keras.planning.runtimes import channel_multiple, runtime_of_path

    assert channel_multiple("tflite") >= channel_multiple("onnxruntime") >= 8
    assert [runtime_of_path(p) for p in ("a.tflite", "b.ONNX", "c.keras", "d.h5", "saved_dir", None)] == \
        ["tflite", "onnxruntime", "tensorflow", "tensorflow", "tensorflow", None]
    with pytest.raises(InputError, match="runtime='coreml'"):
        spa.prune(conv_chain((16, 32), seed=0), flops=0.3, runtime="coreml")
    with pytest.raises(InputError, match="round_to='eight'"):
        spa.prune(conv_chain((16, 32), seed=0), flops=0.3, round_to="eight")


def test_round_to_auto_halves_a_multiple_whose_layout_removes_much_more_score():
    """`round_to="auto"` keeps the runtime's multiple only when its layout removes at most `COARSE_COST` times the
    score a multiple of 1 removes; a conv chain into a wide Dense head, with scores where an 8-channel conv block
    overshoots the target and only high-scored head neurons could fill the gap, halves it. Removed scores are summed
    here from the plan's own masks."""
    import keras
    import numpy as np
    from keras import layers

    from spa_keras.planning.runtimes import channel_multiple
    from spa_keras.planning.selection import COARSE_COST, make_plan

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="c0")(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="c1")(x)
    x = layers.Dense(256, activation="relu", name="fc")(layers.Flatten()(layers.MaxPooling2D(2)(x)))
    model = keras.Model(inputs, layers.Dense(10, name="head")(x))
    analysis = spa.analyze(model)
    rng = np.random.default_rng(0)
    scores = [np.sort(rng.uniform(0.0, 1.0, g.channels)) * (20.0 if g.channels == 256 else 1.0)
              for g in analysis.groups]

    def removed_score(plan):
        return sum(float(s[plan.removed.get(g.key, [])].sum()) for g, s in zip(analysis.groups, scores))

    fine = make_plan(analysis, flops=0.3, scores=scores, round_to=1)
    auto = make_plan(analysis, flops=0.3, scores=scores)
    multiple = channel_multiple()
    coarse = make_plan(analysis, flops=0.3, scores=scores, round_to=multiple // 2)  # 32-channel convs: blocks of 8
    assert abs(coarse.target.reached - 0.3) <= 0.02  # lands, but only by removing high-scored neurons
    assert removed_score(coarse) > COARSE_COST * removed_score(fine)
    assert auto.target.channel_multiple < multiple
    assert removed_score(auto) <= COARSE_COST * removed_score(fine)
    assert abs(auto.target.reached - 0.3) <= 0.02


def test_a_coarse_overshoot_is_filled_in_score_order():
    """When the ranking's next block overshoots the target by far, the landing goes on down the ranking, skipping
    blocks that overshoot: the gap is filled by the lowest-scored blocks that fit, not by whichever trade lands
    closest. Costs are additive here (FLOPs per channel), so the oracle is the greedy fill counted by hand."""
    import dataclasses

    import numpy as np

    from spa_keras.planning.search import BlockSearch

    @dataclasses.dataclass
    class Group:  # what BlockSearch reads of a ChannelGroup
        id: int
        channels: int

        @property
        def prunable(self):
            return self.channels

    groups = [Group(0, 16), Group(1, 64), Group(2, 64)]  # one wide conv, a cheap low-scored and a cheap high-scored
    offsets = [0, 16, 80]
    cost = np.concatenate([np.full(16, 1.0), np.full(64, 0.1), np.full(64, 0.05)])
    score = np.concatenate([np.full(16, 0.1), np.linspace(1.0, 2.0, 64), np.linspace(10.0, 11.0, 64)])
    achieved = lambda mask: float(cost[mask].sum() / cost.sum())  # noqa: E731
    search = BlockSearch(groups, offsets, score, np.ones(144, bool), 8, True)
    mask = search.search(achieved, 0.3)  # 0.3 of 25.6 is 7.68: the wide conv's block of 8 (8.0) overshoots
    assert abs(achieved(mask) - 0.3) <= 0.005
    assert not mask[:16].any()  # the overshooting block is skipped ...
    assert mask[16:72].all() and not mask[72:80].any()  # ... the low-scored group gives its 7 blocks (5.6) ...
    assert mask[80:120].sum() == 40 and mask[80:120].all()  # ... and the rest (2.0) comes from the next in line


def test_a_flops_target_leaves_channels_that_save_next_to_no_flops():
    """A classifier's hidden Dense neurons after global pooling save ~0.1% of a conv channel's FLOPs each: scored
    lowest of all, a FLOPs target still leaves them (they buy nothing towards it), while a channel-ratio target
    takes them first."""
    import keras
    import numpy as np
    from keras import layers

    from spa_keras.planning.selection import make_plan

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="c0")(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="c1")(x)
    x = layers.Dense(64, activation="relu", name="hidden")(layers.GlobalAveragePooling2D()(x))
    analysis = spa.analyze(keras.Model(inputs, layers.Dense(10, name="head")(x)))
    hidden = next(g for g in analysis.groups if g.channels == 64)
    scores = [np.full(g.channels, 0.01) if g is hidden else np.linspace(1.0, 2.0, g.channels)
              for g in analysis.groups]
    by_flops = make_plan(analysis, flops=0.3, scores=scores, round_to=1)
    assert abs(by_flops.target.reached - 0.3) <= 0.02 and not by_flops.removed.get(hidden.key)
    by_ratio = make_plan(analysis, ratio=0.3, scores=scores, round_to=1)
    assert len(by_ratio.removed.get(hidden.key, [])) > 0
