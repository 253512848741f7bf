"""The engine's seam (the format adapters, `spa_keras.formats`): channel masks, a live Keras model masked in place,
and plans that carry new values of kept weights, applied alike by every surgery."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import spa_keras as spa
from spa_keras.bridges import onnx_io
from spa_keras.common.errors import InputError
from spa_keras.pipeline.prune import apply_plan
from spa_keras.planning.plan import PruningPlan
from spa_keras.planning.selection import make_plan
from tests import models
from tests.test_engine_invariants import resnet_block_model


def mask_in_place(analysis, plan):
    """The plan's removed channels zeroed in the analysed live model, through its format adapter."""
    return analysis.source.mask_in_place(analysis, plan.mask(analysis), plan.updates)


def keras_copy(model):
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def keras_run(model, seed=0):
    x = np.random.default_rng(seed).uniform(-1, 1, (2,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    return np.asarray(model(x, training=False))


def test_mask_in_place_zeroes_every_member_and_equals_the_slim_model():
    """The live model keeps its shapes; every member variable holds zeros at the removed channels (kernels,
    biases, BatchNorm γ, β and statistics, consumer columns), so it computes what the slim model computes."""
    model = models.small_cnn()
    analysis = spa.analyze(model)
    plan = make_plan(analysis, flops=0.4)
    slim = apply_plan(analysis, plan).model
    live = keras_copy(model)
    live_analysis = spa.analyze(live)
    shapes = [tuple(v.shape) for v in live.weights]
    assert mask_in_place(live_analysis, plan) is live
    assert [tuple(v.shape) for v in live.weights] == shapes
    masks = live_analysis.param_masks(plan.mask(live_analysis))
    assert masks
    for param, axes in masks.items():
        view = live_analysis.graph.params[param].handle
        value = view.view(view.read())
        for axis, keep in axes.items():
            assert not np.take(value, np.flatnonzero(~keep), axis=axis).any(), param
    np.testing.assert_allclose(keras_run(live), keras_run(slim), rtol=1e-5, atol=1e-6)


def _bumped(graph, param):
    return graph.params[param].value * 1.5 + 0.01


def test_plan_updates_are_applied_by_the_keras_surgery_and_in_place():
    """A plan's new value for a kept weight gives the same slim model as an original that held that value."""
    model = models.small_cnn()
    analysis = spa.analyze(model)
    graph = analysis.graph
    param = next(p for p in graph.params if p.startswith("logits") and p.endswith("kernel"))
    plan = make_plan(analysis, flops=0.4)
    plan.updates = {param: _bumped(graph, param)}
    slim = apply_plan(analysis, plan).model
    expected_source = keras_copy(model)
    expected_analysis = spa.analyze(expected_source)
    view = expected_analysis.graph.params[param].handle
    view.variable.assign(view.unview(plan.updates[param]))
    plain = PruningPlan(plan.removed, plan.channels, plan.target)
    expected = apply_plan(expected_analysis, plain).model
    np.testing.assert_allclose(keras_run(slim), keras_run(expected), rtol=1e-5, atol=1e-6)
    live = keras_copy(model)
    mask_in_place(spa.analyze(live), plan)
    np.testing.assert_allclose(keras_run(live), keras_run(expected), rtol=1e-5, atol=1e-6)


def test_plan_updates_are_applied_by_the_onnx_surgery():
    model = resnet_block_model()
    analysis = spa.analyze(model)
    graph = analysis.graph
    param = next(p for p, v in graph.params.items() if v.value.ndim == 4 and p in
                 {n.inputs[1] for n in graph.nodes if n.op_type == "Conv"} and
                 any(k[0] == p for k in analysis.state.bindings))
    plan = make_plan(analysis, ratio=0.3)
    plan.updates = {param: _bumped(graph, param)}
    slim = apply_plan(analysis, plan).model
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    init = next(i for i in changed.graph.initializer if i.name == param)
    init.CopyFrom(numpy_helper.from_array(plan.updates[param].astype(np.float32), param))
    expected = spa.prune(changed, plan=PruningPlan(plan.removed, plan.channels, plan.target)).model
    feeds = {"x": np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)}
    a, b = onnx_io.run(slim, feeds), onnx_io.run(expected, feeds)
    np.testing.assert_allclose(next(iter(a.values())), next(iter(b.values())), rtol=1e-5, atol=1e-6)
    assert not np.allclose(next(iter(a.values())),
                           next(iter(onnx_io.run(spa.prune(model, plan=PruningPlan(plan.removed, plan.channels))
                                                 .model, feeds).values())))


def test_a_plan_with_updates_saves_its_values_beside_it(tmp_path):
    model = resnet_block_model()
    analysis = spa.analyze(model)
    plan = make_plan(analysis, ratio=0.3)
    param = next(iter(analysis.graph.params))
    plan.updates = {param: np.arange(6.0)}
    plan.save(tmp_path / "plan.json")
    assert (tmp_path / "plan.weights.npz").exists()
    again = PruningPlan.load(tmp_path / "plan.json")
    np.testing.assert_array_equal(again.updates[param], np.arange(6.0))
    assert again.removed == plan.removed
    (tmp_path / "plan.weights.npz").unlink()
    with pytest.raises(InputError, match="keep the plan's .weights.npz beside it"):
        PruningPlan.load(tmp_path / "plan.json")


def test_in_place_masking_needs_a_live_keras_model():
    analysis = spa.analyze(resnet_block_model())
    with pytest.raises(InputError, match="in-place masking needs a live Keras model"):
        mask_in_place(analysis, make_plan(analysis, ratio=0.3))
