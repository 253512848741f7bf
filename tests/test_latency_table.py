"""Per-layer latency tables (`spa_keras.latency.table`): the one-layer models are the layers they stand for, the
interpolation is exact where the latency is bilinear in the channel counts (an analytic table against an
independent MAC count), the cache is reused, and latency plans spend their removals where they buy time."""

import json
import math
import os

import numpy as np
import onnxruntime as ort
import pytest

import spa_keras as spa
from spa_keras.formats.keras.single_layer import keras_layer
from spa_keras.formats.onnx.single_layer import onnx_layer
from spa_keras.latency.table import LatencyModel, LatencyTable, grid, layer_shape
from spa_keras.ops.geometry import LayerShape
from tests.test_targets import conv_chain


def mobile_block(seed=0):
    """1x1 expand -> depthwise 3x3 -> 1x1 project with a residual add, then Dense: every timed layer kind."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((16, 16, 8))
    y = layers.ReLU()(layers.Conv2D(48, 1, name="expand")(x))
    y = layers.ReLU()(layers.DepthwiseConv2D(3, padding="same", name="dw")(y))
    y = layers.Conv2D(8, 1, name="project")(y)
    x = layers.Add()([x, y])
    x = layers.Conv2D(32, 3, strides=2, padding="valid", name="down")(x)
    return keras.Model(inputs, layers.Dense(10, name="head")(layers.GlobalAveragePooling2D()(x)))


def macs(shape: LayerShape) -> int:
    """MACs of a one-layer model, counted from the shapes (independently of spa_keras.planning.counts)."""
    if shape.op != "Conv":
        return math.prod(shape.x[:-1]) * shape.cin * shape.cout
    _, cin, h, w = shape.x
    kh, kw = shape.w[2:]
    top, left, bottom, right = shape.pads
    oh = (h + top + bottom - shape.dilations[0] * (kh - 1) - 1) // shape.strides[0] + 1
    ow = (w + left + right - shape.dilations[1] * (kw - 1) - 1) // shape.strides[1] + 1
    return shape.x[0] * shape.w[0] * oh * ow * (cin // shape.group) * kh * kw


class AnalyticTable(LatencyTable):
    """A table whose 'measurements' are a nanosecond per MAC: latency bilinear in (input, output) channels."""

    def measure(self, shapes, what=""):
        for s in shapes:
            self.seconds.setdefault(s.key, 1e-9 * macs(s) if s.op != "Identity" else 0.0)


def timed_shapes(model, batch=1):
    analysis = spa.analyze(model)
    return analysis, [s for n in analysis.graph.nodes if (s := layer_shape(n, analysis.graph, batch))]


def test_layer_shapes_of_every_kind():
    analysis, shapes = timed_shapes(mobile_block(), batch=4)
    kinds = sorted((s.op, s.depthwise, s.cin, s.cout) for s in shapes)
    assert kinds == [("Conv", False, 8, 32), ("Conv", False, 8, 48), ("Conv", False, 48, 8), ("Conv", True, 48, 48),
                     ("MatMul", False, 32, 10)]
    assert all(s.x[0] == 4 for s in shapes)
    dw = next(s for s in shapes if s.depthwise)
    assert dw.at(16, 99).w == (16, 1, 3, 3) and dw.at(16, 99).group == 16  # a depthwise layer follows its input


@pytest.mark.parametrize("at", [(1.0, 1.0), (0.5, 0.75), (0.25, 0.25)])
def test_one_layer_models_run_and_agree_on_shapes(at):
    """Each one-layer ONNX model runs in onnxruntime, and the Keras one (channels last) gives the same output shape:
    they time the layer they stand for."""
    _, shapes = timed_shapes(mobile_block())
    for full in shapes:
        s = full.at(max(1, int(full.cin * at[0])), max(1, int(full.cout * at[1])))
        session = ort.InferenceSession(onnx_layer(s).SerializeToString(), providers=["CPUExecutionProvider"])
        y, = session.run(None, {"x": np.zeros(s.x, np.float32)})
        keras_y = keras_layer(s)(np.zeros((s.x[0], *s.x[2:], s.x[1]) if s.op == "Conv" else s.x, np.float32))
        expected = (y.shape[0], *y.shape[2:], y.shape[1]) if s.op == "Conv" else y.shape
        assert tuple(keras_y.shape) == expected
        assert (y.shape[1] if s.op == "Conv" else y.shape[-1]) == s.cout
        if s.op == "Conv":  # the MAC count the analytic tables below use, against onnxruntime's output shape
            assert macs(s) == math.prod(y.shape) * (s.cin // s.group) * math.prod(s.w[2:])


def test_grid_holds_the_full_width_and_fast_counts():
    from spa_keras.planning.runtimes import group_multiples

    assert grid(64) == [16, 32, 48, 64]
    for channels in (3, 16, 24, 96, 100, 1280):
        g = grid(channels)
        m = group_multiples([channels], 16)[0]
        assert g == sorted(set(g)) and g[-1] == channels and 0 < g[0]
        assert all(c % m == 0 for c in g[:-1]) and 3 <= len(g) <= 5


@pytest.mark.parametrize("model", [mobile_block, lambda: conv_chain((16, 32, 64), seed=0)])
def test_interpolation_is_exact_for_a_bilinear_latency(model, tmp_path):
    """With a nanosecond per MAC, predicted layer time equals the slim model's MACs (CostModel, counted
    independently) for random masks, between grid points too."""
    analysis = spa.analyze(model())
    lm = LatencyModel(analysis, "onnxruntime", table=AnalyticTable("onnxruntime", path=str(tmp_path / "t.json")))
    cost = analysis.cost
    timed = {n.name for n in analysis.graph.nodes if layer_shape(n, analysis.graph, 1)}
    rng = np.random.default_rng(0)
    for _ in range(20):
        removed = random_mask(analysis, rng)
        expected = sum(f for name, f in cost.node_flops(removed).items() if name in timed) / 2 * 1e-9
        assert lm.layers_seconds(removed) == pytest.approx(expected, rel=1e-9)


def random_mask(analysis, rng, most=None):
    """Removes a random number of each group's unblocked channels (at least one stays)."""
    removed = np.zeros(len(analysis.group_of_channel), bool)
    for g, start in zip(analysis.groups, analysis.offsets):
        free = np.flatnonzero(~g.blocked)
        k = min(len(free), g.channels - 1) if most else int(rng.integers(0, min(len(free), g.channels - 1) + 1))
        removed[start + rng.permutation(free)[:k]] = True
    return removed


def test_real_table_is_measured_once_and_cached(tmp_path):
    """A real onnxruntime table: every grid point timed (positive seconds), saved; a second model of the same
    shapes measures nothing and predicts the same; another runtime has its own file."""
    path = str(tmp_path / "ort.json")
    analysis = spa.analyze(conv_chain((16, 32), seed=0))
    first = LatencyModel(analysis, "onnxruntime", table=LatencyTable("onnxruntime", path=path))
    data = json.load(open(path))
    assert data["format"] == "spa-keras latency table 1" and len(data["seconds"]) >= 4
    assert all(v > 0 for v in data["seconds"].values())
    again = LatencyTable("onnxruntime", path=path)
    mtime = os.path.getmtime(path)
    second = LatencyModel(analysis, "onnxruntime", table=again)
    assert os.path.getmtime(path) == mtime and second.full == first.full
    assert first.layers_seconds(random_mask(analysis, np.random.default_rng(0), most=True)) < first.full
    from spa_keras.latency.table import cache_path

    assert cache_path("onnxruntime", 2) != cache_path("tflite", 2) != cache_path("onnxruntime", 1)


def test_tflite_layers_are_timed(tmp_path):
    analysis = spa.analyze(conv_chain((16,), seed=0))
    lm = LatencyModel(analysis, "tflite", table=LatencyTable("tflite", path=str(tmp_path / "tfl.json")))
    assert lm.full > 0 and len(lm.table.seconds) >= 2


def test_latency_plans_remove_where_time_is_saved(tmp_path):
    """Equal scores everywhere: ranked by score per second (analytic table), a latency plan takes channels from
    the layers with the most time per channel; ranked by score alone (the default) it does not. Predicted and
    planned agree."""
    analysis = spa.analyze(conv_chain((32, 32, 32), seed=0))
    lm = LatencyModel(analysis, "onnxruntime", table=AnalyticTable("onnxruntime", path=str(tmp_path / "t.json")))
    scores = [np.ones(g.channels) for g in analysis.groups]
    plan = spa.planning.selection.make_plan(analysis, latency=0.3, latency_model=lm, scores=scores, round_to=1,
                              rank_by_latency=True)
    assert plan.target.kind == "latency" and abs(plan.target.reached - 0.3) <= 0.02
    assert plan.target.reached == pytest.approx(lm.removed_fraction(plan.mask(analysis)), abs=1e-6)
    per_group = {k: len(v) for k, v in plan.removed.items()}
    # conv0 at 32x32 (input 3 channels) and conv1 at 16x16 (input 32): per output channel of conv0, its own MACs
    # and conv1's input MACs go; conv2's channels feed only the small head
    key = lambda name: next(k for k in plan.channels if str(k).startswith(name))  # noqa: E731
    assert per_group.get(key("conv0"), 0) > per_group.get(key("conv2"), 0)
    with pytest.raises(spa.errors.InputError, match="latency= and rank_by_latency= need a latency model"):
        spa.planning.selection.make_plan(analysis, latency=0.3, scores=scores)
    with pytest.raises(spa.errors.InputError, match="need a latency model"):
        spa.planning.selection.make_plan(analysis, flops=0.3, scores=scores, rank_by_latency=True)
    # by default a latency target ranks by score alone: with equal scores, the same channels as a FLOPs plan
    by_score = spa.planning.selection.make_plan(analysis, latency=0.3, latency_model=lm, scores=scores, round_to=1)
    assert by_score.target.reached == pytest.approx(0.3, abs=0.02)
    assert by_score.removed != plan.removed


class NoisyTable(LatencyTable):
    """Timings as noisy as a busy machine makes them: random, not increasing with the channel counts."""

    def measure(self, shapes, what=""):
        rng = np.random.default_rng(len(shapes))
        for s in shapes:
            self.seconds.setdefault(s.key, float(rng.uniform(1e-5, 1e-3)))


def test_noisy_timings_never_predict_that_removing_channels_slows_a_model(tmp_path):
    analysis = spa.analyze(mobile_block())
    lm = LatencyModel(analysis, "onnxruntime", whole_seconds=1e-3,
                      table=NoisyTable("onnxruntime", path=str(tmp_path / "t.json")))
    rng = np.random.default_rng(1)
    for _ in range(30):
        smaller = random_mask(analysis, rng)
        larger = smaller | random_mask(analysis, rng)
        larger = _keep_one_per_group(analysis, larger)
        smaller &= larger
        assert 0 <= lm.removed_fraction(smaller) <= lm.removed_fraction(larger) + 1e-12


def _keep_one_per_group(analysis, removed):
    for g, start in zip(analysis.groups, analysis.offsets):
        if removed[start:start + g.channels].all():
            removed[start] = False
    return removed


def test_a_broken_or_unwritable_cache_costs_time_not_the_prune(tmp_path):
    """A corrupt cache file is measured again; a cache that cannot be written is one warning that names it."""
    analysis = spa.analyze(conv_chain((16,), seed=0))
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    assert LatencyTable("onnxruntime", path=str(corrupt)).seconds == {}
    (tmp_path / "a_file").write_text("")
    unwritable = str(tmp_path / "a_file" / "cache.json")  # its folder is a file
    with pytest.warns(UserWarning, match="latency table not cached at .*a_file.*SPA_KERAS_CACHE"):
        lm = LatencyModel(analysis, "onnxruntime", table=LatencyTable("onnxruntime", path=unwritable))
    assert lm.full > 0 and not os.path.exists(unwritable)
