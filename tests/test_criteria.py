"""Importance criteria against hand computations, AGG/NORM, data handling, iterative pruning, and every criterion
on real architectures (keras.applications through the Keras front-end; the data-free ones also on ONNX).

Oracles: magnitude-style criteria are recomputed with numpy on the Keras variables (in Keras's own layout, so the
front-end's layout views are checked too); gradient criteria with tf.GradientTape written out here, Hessians as
full Jacobians of the gradient (not the library's Hessian-vector products).
"""

import numpy as np
import pytest

import spa_keras as spa
from spa_keras.importance import aggregate, normalize
from tests import models


def tiny_model(seed=0):
    """Conv → BN → ReLU → depthwise → 1×1 conv → GAP → Dense: two prunable groups (4 and 3 channels)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2), name="image")
    x = layers.Conv2D(4, 3, name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.Conv2D(3, 1, name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(2, name="head")(x)
    return models.randomize_keras(keras.Model(inputs, outputs, name="tiny"), seed)


# per group: (variable path, channel axis in Keras layout); weights are rank >= 2, the rest are trainable vectors
GROUPS = {
    "conv1": {"weights": [("conv1/kernel", 3), ("dw/kernel", 2), ("conv2/kernel", 2)],
              "vectors": [("conv1/bias", 0), ("bn/gamma", 0), ("bn/beta", 0), ("dw/bias", 0)]},
    "conv2": {"weights": [("conv2/kernel", 3), ("head/kernel", 0)], "vectors": [("conv2/bias", 0)]},
}


def tiny_data(n=8, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, 2)).astype("float32"), rng.integers(0, 2, n)


def loss_fn():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def scores_by_name(model, criterion, **kwargs):
    """{"conv1": scores, "conv2": scores} from the criterion on the Keras front-end's analysis."""
    analysis = spa.analyze(model)
    scores = spa.importance.score_groups(criterion, analysis, **kwargs)
    out = {}
    for group, s in zip(analysis.groups, scores):
        producer = group.members[0].param
        if producer in ("conv1/kernel", "conv2/kernel"):
            out[producer.split("/")[0]] = s
    assert set(out) == {"conv1", "conv2"}
    return out


def per_channel(array, axis):
    """Σ over every axis but `axis` (a channel's slice)."""
    return np.asarray(array, np.float64).sum(axis=tuple(a for a in range(np.ndim(array)) if a != axis))


def weights_of(model):
    return {v.path: np.asarray(v.numpy(), np.float64) for v in model.weights}


def hand(model, group, member_fn, kinds=("weights",), agg=np.sum):
    """AGG over the group's members of `member_fn(value of the variable, its path, channel axis)`."""
    w = weights_of(model)
    members = [m for kind in kinds for m in GROUPS[group][kind]]
    return agg(np.stack([member_fn(w[path], path, axis) for path, axis in members]), axis=0)


def mean_norm(s):
    return s / np.abs(s).mean()


# ---- AGG and NORM ----------------------------------------------------------------------------------------------

def test_aggregations_and_normalizations():
    stack = np.array([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]])
    expected = {"sum": [5, 3, -3], "mean": [2.5, 1.5, -1.5], "max": [4, 5, 3], "prod": [4, -10, -18],
                "first": [1, -2, 3]}
    for agg, want in expected.items():
        np.testing.assert_allclose(aggregate(stack, agg), want)
    s = np.array([1.0, 3.0, 4.0])
    expected = {"none": s, "sum": s / 8, "mean": s / (8 / 3), "max": s / 4, "minmax": (s - 1) / 3,
                "gaussian": (s - s.mean()) / s.std()}
    for norm, want in expected.items():
        np.testing.assert_allclose(normalize(s, norm), want)
    signed = np.array([-2.0, 1.0, 4.0])  # magnitudes divide: signs survive
    np.testing.assert_allclose(normalize(signed, "mean"), signed / (7 / 3))
    np.testing.assert_allclose(normalize(np.zeros(3), "mean"), np.zeros(3))  # nothing to divide by: unchanged
    tiny = np.array([1e-13, 2e-13, 3e-13])  # vanishing gradient saliencies still compare with other groups
    np.testing.assert_allclose(normalize(tiny, "mean"), [0.5, 1.0, 1.5])
    with pytest.raises(spa.InputError, match="agg='median'"):
        spa.importance.L1(agg="median")
    with pytest.raises(spa.InputError, match="norm='l3'"):
        spa.importance.L1(norm="l3")


# ---- data-free criteria ---------------------------------------------------------------------------------------

def test_magnitude_against_numpy():
    model = tiny_model()
    l1 = scores_by_name(model, "l1")
    l2 = scores_by_name(model, "l2")
    for group in GROUPS:
        l1_hand = hand(model, group, lambda v, p, a: per_channel(np.abs(v), a))
        l2_hand = np.sqrt(hand(model, group, lambda v, p, a: per_channel(v * v, a)))
        np.testing.assert_allclose(l1[group], mean_norm(l1_hand))
        np.testing.assert_allclose(l2[group], mean_norm(l2_hand))
    # options: AGG max, NORM max
    opt = scores_by_name(model, spa.importance.L1(agg="max", norm="max"))
    want = hand(model, "conv1", lambda v, p, a: per_channel(np.abs(v), a), agg=np.max)
    np.testing.assert_allclose(opt["conv1"], want / want.max())
    first = scores_by_name(model, spa.importance.L1(agg="first", norm="none"))  # the producer's kernel
    np.testing.assert_allclose(first["conv2"], per_channel(np.abs(weights_of(model)["conv2/kernel"]), 3))


def test_first_is_the_producer_whatever_the_names_and_axes():
    """AGG "first" scores the kernel that makes the channels: a Dense kernel's axis 1, an expansion conv before the
    depthwise conv after it, even where names would sort the consumer first."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 5, 2), name="image")
    x = layers.Conv2D(4, 1, name="z_expand")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", name="a_dw")(x)
    x = layers.Dense(3, name="z_fc1")(layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inputs, layers.Dense(2, name="a_fc2")(x))
    analysis = spa.analyze(model)
    first = dict(zip((g.members[0].param for g in analysis.groups),
                     spa.importance.score_groups(spa.importance.L1(agg="first", norm="none"), analysis)))
    assert {"z_expand/kernel", "z_fc1/kernel"} <= set(first)  # (and a_fc2: the output, frozen)
    w = weights_of(model)
    np.testing.assert_allclose(first["z_expand/kernel"], per_channel(np.abs(w["z_expand/kernel"]), 3))
    np.testing.assert_allclose(first["z_fc1/kernel"], per_channel(np.abs(w["z_fc1/kernel"]), 1))


def test_bn_scale_and_fallback():
    model = tiny_model()
    scores = scores_by_name(model, "bn_scale")
    gamma = np.abs(weights_of(model)["bn/gamma"])
    np.testing.assert_allclose(scores["conv1"], gamma / gamma.mean())
    # conv2's group has no BatchNorm: L1 magnitude
    np.testing.assert_allclose(scores["conv2"], scores_by_name(model, "l1")["conv2"])
    # a BatchNorm without β (center=False) still has its scale read
    import keras

    inputs = keras.Input((4, 4, 2))
    x = keras.layers.BatchNormalization(center=False, name="bn")(keras.layers.Conv2D(3, 1, name="conv")(inputs))
    model = models.randomize_keras(keras.Model(inputs, keras.layers.Dense(2, name="head")(x)))
    analysis = spa.analyze(model)
    (group, s), = [(g, s) for g, s in zip(analysis.groups, spa.importance.score_groups("bn_scale", analysis))
                   if g.members[0].param == "conv/kernel"]
    gamma = np.abs(weights_of(model)["bn/gamma"])
    np.testing.assert_allclose(s, gamma / gamma.mean())


def test_random_is_seeded():
    model = tiny_model()
    scores = spa.importance.score_groups(spa.importance.Random(seed=3), spa.analyze(model))
    rng = np.random.default_rng(3)
    for s in scores:
        np.testing.assert_array_equal(s, rng.random(len(s)))
    assert not np.array_equal(scores[0], spa.importance.score_groups("random", spa.analyze(model))[0])


def test_lamp_against_numpy():
    def lamp(v, path, axis):
        energy = per_channel(v * v, axis)
        # LAMP by its definition: the channel's share of the energy of all channels at least as large
        return np.array([e / energy[energy >= e].sum() for e in energy])

    model = tiny_model()
    scores = scores_by_name(model, "lamp")
    for group in GROUPS:
        np.testing.assert_allclose(scores[group], mean_norm(hand(model, group, lamp)))


def test_fpgm_against_numpy():
    def fpgm(v, path, axis):
        rows = np.moveaxis(v, axis, 0).reshape(v.shape[axis], -1)
        return np.array([sum(np.linalg.norm(r - q) for q in rows) for r in rows])

    model = tiny_model()
    scores = scores_by_name(model, "fpgm")
    for group in GROUPS:
        np.testing.assert_allclose(scores[group], mean_norm(hand(model, group, fpgm)), rtol=1e-9)


# ---- gradient criteria ----------------------------------------------------------------------------------------

def tape_gradients(model, x, y):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(loss_fn()(y, model(x, training=False)))
    return {v.path: np.asarray(g, np.float64) for v, g in zip(model.trainable_variables,
                                                             tape.gradient(loss, model.trainable_variables))}


def full_hessian(model, x, y):
    """The Hessian of the loss w.r.t. all trainable variables, flattened in trainable-variable order, as the
    Jacobian of the gradient."""
    import tensorflow as tf

    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(loss_fn()(y, model(x, training=False)))
        flat = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, variables)], 0)
    blocks = outer.jacobian(flat, variables)
    return np.concatenate([np.asarray(b, np.float64).reshape(len(flat), -1) for b in blocks], axis=1)


def split(flat, model):
    out, start = {}, 0
    for v in model.trainable_variables:
        n = int(np.prod(v.shape))
        out[v.path] = flat[start:start + n].reshape(tuple(v.shape))
        start += n
    return out


def check_saliency(model, scores, saliency):
    """Scores equal the per-channel sums of a per-weight saliency over all trainable members, AGG sum, NORM mean."""
    for group in GROUPS:
        want = hand(model, group, lambda v, p, a: per_channel(saliency[p], a), kinds=("weights", "vectors"))
        np.testing.assert_allclose(scores[group], mean_norm(want), rtol=1e-4, atol=1e-9)


def test_taylor_and_snip_against_tape():
    model = tiny_model()
    x, y = tiny_data(8)
    w = weights_of(model)
    batches = [tape_gradients(model, x[:4], y[:4]), tape_gradients(model, x[4:], y[4:])]
    taylor = {p: (np.abs(w[p] * batches[0][p]) + np.abs(w[p] * batches[1][p])) / 2 for p in batches[0]}
    scores = scores_by_name(model, spa.importance.Taylor(batch_size=4), data=(x, y), loss=loss_fn())
    check_saliency(model, scores, taylor)
    snip = {p: np.abs(w[p] * batches[0][p]) for p in batches[0]}  # the first batch only
    check_saliency(model, scores_by_name(model, spa.importance.SNIP(batch_size=4), data=(x, y), loss=loss_fn()),
                   snip)


def test_grasp_crop_obd_against_full_hessian():
    model = tiny_model()
    x, y = tiny_data(8)
    w = weights_of(model)
    halves = [(x[:4], y[:4]), (x[4:], y[4:])]
    order = [v.path for v in model.trainable_variables]
    flat_w = np.concatenate([w[p].ravel() for p in order])
    grads = [np.concatenate([tape_gradients(model, *b)[p].ravel() for p in order]) for b in halves]
    hessians = [full_hessian(model, *b) for b in halves]
    g = (grads[0] + grads[1]) / 2
    hg = (hessians[0] @ g + hessians[1] @ g) / 2
    options = dict(data=(x, y), loss=loss_fn())
    check_saliency(model, scores_by_name(model, spa.importance.GraSP(batch_size=4, batches=2), **options),
                   split(flat_w * hg, model))
    check_saliency(model, scores_by_name(model, spa.importance.CroP(batch_size=4, batches=2), **options),
                   split(np.abs(flat_w * hg), model))
    # OBD: Hutchinson's estimate with the documented probe order (per batch, per probe, per variable)
    rng = np.random.default_rng(7)
    diagonal = np.zeros_like(flat_w)
    for h in hessians:
        for _ in range(3):
            v = np.concatenate([(rng.integers(0, 2, size=tuple(var.shape)) * 2.0 - 1.0).ravel()
                                for var in model.trainable_variables])
            diagonal += v * (h @ v)
    diagonal /= 6
    obd = spa.importance.OBD(batch_size=4, batches=2, probes=3, seed=7)
    check_saliency(model, scores_by_name(model, obd, **options), split(0.5 * diagonal * flat_w ** 2, model))


def test_data_forms_agree():
    import tensorflow as tf

    model = tiny_model()
    x, y = tiny_data(8)
    taylor = spa.importance.Taylor(batch_size=4)
    want = scores_by_name(model, taylor, data=(x, y), loss=loss_fn())
    forms = {"dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(4),
             "generator": ((x[i:i + 4], y[i:i + 4]) for i in (0, 4)),
             "list of batches": [(x[:4], y[:4], None), (x[4:], y[4:], None)]}
    for name, data in forms.items():
        got = scores_by_name(model, taylor, data=data, loss=loss_fn())
        for group in GROUPS:
            np.testing.assert_allclose(got[group], want[group], rtol=1e-6, err_msg=name)
    model.compile(loss=loss_fn())  # the compiled loss is the default
    got = scores_by_name(model, taylor, data=(x, y))
    np.testing.assert_allclose(got["conv1"], want["conv1"], rtol=1e-6)


def test_gradient_criteria_errors():
    model = tiny_model()
    x, y = tiny_data(4)
    with pytest.raises(spa.InputError, match="criterion 'taylor' needs data="):
        spa.prune(model, ratio=0.3, criterion="taylor")
    with pytest.raises(spa.InputError, match="criterion 'snip' needs loss="):
        spa.prune(model, ratio=0.3, criterion="snip", data=(x, y))
    with pytest.raises(spa.InputError, match="no batches"):
        spa.prune(model, ratio=0.3, criterion="snip", data=iter(()), loss="mse")
    with pytest.raises(spa.InputError, match="unknown criterion 'l3'"):
        spa.prune(model, ratio=0.3, criterion="l3")
    with pytest.raises(spa.InputError, match="x has 4 rows and y 3"):
        spa.prune(model, ratio=0.3, criterion="snip", data=(x, y[:3]), loss=loss_fn())
    import tensorflow as tf

    unbatched = tf.data.Dataset.from_tensor_slices((x, y))  # elements without a batch axis
    with pytest.raises(spa.InputError, match=r"criterion 'taylor': running model 'tiny'.*\.batch\(\)"):
        spa.prune(model, ratio=0.3, criterion="taylor", data=unbatched, loss=loss_fn())
    labels = [int(v) for v in y]  # y as a plain list works like an array
    listed = spa.prune(model, ratio=0.3, criterion="snip", data=(x, labels), loss=loss_fn()).plan.removed
    assert listed == spa.prune(model, ratio=0.3, criterion="snip", data=(x, y), loss=loss_fn()).plan.removed


def test_gradient_criteria_need_a_keras_model():
    model = tiny_model()
    onnx_analysis = spa.analyze(model, via="onnx")
    x, y = tiny_data(4)
    for name in ("taylor", "snip", "grasp", "crop", "obd"):
        with pytest.raises(spa.InputError, match=f"criterion '{name}' .*needs a TF/Keras model"):
            spa.prune(onnx_analysis.source.analysed_model, ratio=0.3, criterion=name, data=(x, y), loss="mse",
                      analysis=onnx_analysis)


# ---- iterative pruning ----------------------------------------------------------------------------------------

def test_iterative_pruning_meets_the_target_and_replays():
    import keras

    model = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.5, weights=None,
                                           classifier_activation=None)
    analysis = spa.analyze(model)
    for kind in ("flops", "params", "ratio"):
        result = spa.prune(model, steps=3, analysis=analysis, criterion="l1", **{kind: 0.5})
        assert result.plan.target.steps == 3
        if kind == "ratio":
            prunable = sum(g.prunable for g in analysis.groups)
            assert abs(result.plan.removed_channels / prunable - 0.5) <= 0.02
        else:
            reached = 1 - getattr(result.after, kind) / getattr(result.before, kind)
            assert 0.5 <= reached <= 0.52, (kind, reached)
        assert result.model.count_params() == result.after.params
        # the plan is for the original model: replaying it gives the same slim model
        again = spa.prune(model, plan=result.plan, analysis=analysis)
        assert again.after == result.after
        assert [w.shape for w in again.model.weights] == [w.shape for w in result.model.weights]
        # caps stay relative to the original groups
        for group in analysis.groups:
            assert len(result.plan.removed.get(group.key, [])) <= int(0.9 * group.channels)
    # rescoring differs from one-shot pruning (scores change as the model slims)
    one_shot = spa.prune(model, flops=0.5, analysis=analysis, criterion="l1")
    iterative = spa.prune(model, flops=0.5, steps=3, analysis=analysis, criterion="l1")
    assert one_shot.plan.removed != iterative.plan.removed
    with pytest.raises(spa.InputError, match="steps=0"):
        spa.prune(model, flops=0.5, steps=0, analysis=analysis)


def test_iterative_pruning_with_data_reads_a_generator_once():
    model = tiny_model()
    x, y = tiny_data(8)
    batches = ((x[i:i + 4], y[i:i + 4]) for i in (0, 4))
    result = spa.prune(model, ratio=0.4, steps=2, criterion=spa.importance.Taylor(batches=2), data=batches,
                       loss=loss_fn())
    assert result.model.count_params() == result.after.params < result.before.params


# ---- every criterion on real architectures ----------------------------------------------------------------------

ALL = sorted(spa.importance.CRITERIA)
DATA_FREE = [c for c in ALL if not spa.importance.get_criterion(c).needs_data]


@pytest.fixture(scope="module")
def apps():
    import keras

    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            model = getattr(keras.applications, name)(input_shape=(64, 64, 3), weights=None,
                                                      classifier_activation=None)
            cache[name] = models.randomize_keras(model), {}
        return cache[name]
    return get


def app_data(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 64, 64, 3)).astype("float32"), rng.integers(0, 1000, n)


def check_app(model, result):
    x, _ = app_data(2)
    assert abs(1 - result.after.flops / result.before.flops - 0.5) <= 0.02
    if hasattr(result.model, "count_params"):
        assert result.model.count_params() == result.after.params
        assert result.model(x, training=False).shape == model(x, training=False).shape


@pytest.mark.parametrize("name", [pytest.param("MobileNetV2"), pytest.param("ResNet50", marks=pytest.mark.zoo)])
@pytest.mark.parametrize("criterion", ALL)
def test_every_criterion_on_keras_applications(apps, name, criterion):
    model, cache = apps(name)
    if "keras" not in cache:
        cache["keras"] = spa.analyze(model)
    analysis = cache["keras"]
    result = spa.prune(model, flops=0.5, criterion=criterion, data=app_data(), loss=loss_fn(), analysis=analysis)
    check_app(model, result)
    assert result.plan.target.criterion == criterion


@pytest.mark.parametrize("name", [pytest.param("MobileNetV2"), pytest.param("ResNet50", marks=pytest.mark.zoo)])
@pytest.mark.parametrize("criterion", DATA_FREE)
def test_data_free_criteria_on_onnx(apps, name, criterion):
    model, cache = apps(name)
    if "onnx" not in cache:
        cache["onnx"] = spa.analyze(model, via="onnx")
    analysis = cache["onnx"]
    proto = analysis.source.analysed_model
    result = spa.prune(proto, flops=0.5, criterion=criterion, analysis=analysis)
    check_app(model, result)
    assert type(result.model).__name__ == "ModelProto"
