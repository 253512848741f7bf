"""Latency targets (`spa.prune(model, latency=...)`): the search over measured speed-ups, with an analytic latency
oracle (so the landing can be checked exactly), and end to end on real runtimes (structure only: timings on a
shared 2-core machine are not a test oracle)."""

import json

import numpy as np
import onnx
import pytest

import spa_keras as spa
from spa_keras.latency.target import latency_plan, next_fraction
from spa_keras.latency.timing import lower_quartile, paired_ratio
from tests.test_engine_invariants import resnet_block_model
from tests.test_targets import conv_chain


def test_search_lands_on_an_analytic_latency_model():
    """With latency = FLOPs ** 0.7 (memory-bound layers make latency fall slower than FLOPs), the plan chosen
    removes the asked latency within the tolerance, and the record lists every round with its FLOPs."""
    model = conv_chain((32, 64, 128), seed=0)
    analysis = spa.analyze(model)
    plan_at = lambda f: spa.planning.selection.make_plan(analysis, flops=f, round_to=1)  # noqa: E731
    measure = lambda p: 1 / (1 - p.target.reached) ** 0.7  # noqa: E731
    for amount in (0.3, 0.5):
        plan = latency_plan(amount, plan_at, measure, tolerance=0.02)
        assert abs((1 - 1 / plan.target.measured_speedup) - amount) <= 0.02 * (1 - amount) + 1e-9
        flops = plan.target.flops_removed
        assert flops > amount  # FLOPs must fall further than latency under this model
        assert abs(1 - (1 - flops) ** 0.7 - plan.target.reached) < 1e-3
        assert [r["flops"] for r in plan.target.rounds][0] == pytest.approx(amount, abs=0.02)


def test_next_fraction_stays_inside_the_bracket():
    rng = np.random.default_rng(0)
    for _ in range(200):
        points = [(0.0, 1.0)] + [(f, l) for f, l in zip(rng.uniform(0, 0.9, 3), rng.uniform(0.2, 1, 3))]
        goal = rng.uniform(0.3, 0.8)
        f = next_fraction(points, goal)
        top = min([p[0] for p in points if p[1] <= goal], default=0.95)  # the least FLOPs known to be enough
        low = max([p[0] for p in points if p[1] > goal and p[0] < top], default=0.0)
        assert low - 1e-4 <= f <= top + 1e-4  # f is rounded to 4 decimals


def test_paired_ratio_cancels_load_that_drifts_between_turns():
    """Models of 10 ms and 5 ms while the machine's load doubles over the turns, and a burst slows the slim model
    in six of the twenty turns (the quiet early ones): the median of per-turn ratios still gives 2.00; a ratio of
    lower quartiles compares quiet runs of one with loaded runs of the other."""
    load = np.linspace(1.0, 2.0, 20)
    a, b = 10 * load, 5 * load
    b[:6] *= 1.5
    assert paired_ratio(list(a), list(b)) == pytest.approx(2.0)
    assert lower_quartile(list(a)) / lower_quartile(list(b)) < 1.9


@pytest.mark.parametrize("runtime", ["onnxruntime", "tensorflow"])
def test_latency_target_end_to_end_on_a_keras_model(runtime):
    """A real search: every round measured on the runtime; the result's plan is the round closest to the goal,
    its model is that plan's slim model (FLOPs agree), and the plan replays."""
    model = conv_chain((32, 64, 128), seed=0)
    result = spa.prune(model, latency=0.4, runtime=runtime, criterion="l1")
    target = result.plan.target
    assert target.kind == "latency" and target.runtime == runtime and 1 <= len(target.rounds) <= 6
    chosen = min(target.rounds, key=lambda r: abs(1 / r["speedup"] - 0.6))
    assert target.measured_speedup == chosen["speedup"]
    # rounds plan on the per-layer table's predicted latency: the first aims at 40% of it (or all it can reach)
    assert all(0 <= r["planned"] <= 0.4 + 0.03 for r in target.rounds[:1])
    assert 1 - result.after.flops / result.before.flops == pytest.approx(target.flops_removed, abs=1e-4)
    again = spa.prune(model, plan=spa.PruningPlan.from_json(result.plan.to_json()))
    assert again.after == result.after


def test_latency_target_times_at_the_batch_the_input_shape_gives(monkeypatch):
    """`input_shape=(4, ...)` plans for batches of 4: the whole models and the per-layer table are timed at batch 4
    (the analysis itself keeps batch 1), and batches that disagree are refused."""
    import spa_keras.latency.timing as latency
    import spa_keras.latency.table as latency_table

    fed, layers, timer, time_layer = [], [], latency.Timer, latency_table.time_layer

    def recording_timer(model, runtime, input_shapes, **kw):
        if hasattr(model, "layers"):  # whole Keras models (the table's one-layer models for onnxruntime are ONNX)
            fed.extend(tuple(s) for s in input_shapes.values())
        return timer(model, runtime, input_shapes, **kw)

    def recording_time_layer(shape, *args):
        layers.append(shape)
        return time_layer(shape, *args)

    monkeypatch.setattr(latency, "Timer", recording_timer)
    monkeypatch.setattr(latency_table, "time_layer", recording_time_layer)
    model = conv_chain((16, 32), seed=0)
    result = spa.prune(model, latency=0.3, runtime="onnxruntime", input_shape=(4, 32, 32, 3), criterion="l1")
    assert fed and set(fed) == {(4, 32, 32, 3)} and result.plan.target.batch == 4
    convs = [s for s in layers if s.op == "Conv"]
    assert convs and {s.x[0] for s in convs} == {4}
    assert dict(result.analysis.input_shapes) == {model.inputs[0].name: (1, 32, 32, 3)}
    from spa_keras.latency.target import batch_of as _batch_of

    assert _batch_of(None) == 1 and _batch_of({"a": (4, 8), "b": (4, 3)}) == 4
    with pytest.raises(spa.errors.InputError, match="different batch sizes"):
        _batch_of({"a": (4, 32, 32, 3), "b": (2, 32, 32, 3)})


def test_latency_target_from_the_cli_on_onnx(tmp_path):
    from click.testing import CliRunner

    from spa_keras.ui.cli import cli

    path = tmp_path / "resnet.onnx"
    onnx.save(resnet_block_model(), path)
    plan = tmp_path / "plan.json"
    result = CliRunner().invoke(cli, ["prune", "--criterion", "l1", str(path), "-o", str(tmp_path / "slim.onnx"),
                                      "--latency", "0.3", "--plan-out", str(plan)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    target = json.loads(plan.read_text())["target"]
    assert target["kind"] == "latency" and target["runtime"] == "onnxruntime" and target["rounds"]


def test_latency_target_mistakes():
    model = conv_chain((16, 32), seed=0)
    with pytest.raises(spa.errors.InputError, match="latency= is a target of its own"):
        spa.prune(model, latency=0.3, flops=0.2)
    with pytest.raises(spa.errors.InputError, match="latency=1.5"):
        spa.prune(model, latency=1.5)
    with pytest.raises(spa.errors.InputError, match="an ONNX model is timed on onnxruntime"):
        spa.prune(resnet_block_model(), latency=0.3, runtime="tflite")
