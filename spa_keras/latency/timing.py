"""Latency targets: a plan that removes a fraction of the latency *measured* on a runtime, on this machine.

FLOPs predict latency poorly (memory-bound layers, kernel blocking, fused ops), so `spa.prune(model, latency=0.5,
runtime="onnxruntime")` plans on measured times. A per-layer latency table (`spa_keras.latency.table`: every
convolution and matrix product timed alone at a few channel counts, once per machine and runtime, cached) predicts
the latency of any plan (channels rank by importance, as for every target), and the first plan aims at the asked
fraction of the predicted latency. The slim model is then built, compiled for the runtime and timed against
the original (interleaved runs, the median of per-turn ratios); when the measured speed-up misses the goal by more
than `tolerance`, the planned fraction is corrected by interpolating the measured latencies (a few rounds; each
shown as a line of progress). The plan records every measured round. Whole-model timing is what a user sees, so the
landing is checked on the quantity itself; the price is one conversion per round (seconds for small models, ~20 s
for a ResNet50 through tf2onnx). Everything is timed at the batch size of `input_shape` (default 1): batch 16 can
want another plan than batch 1. Timings depend on the machine and its load: plan on the machine you deploy on.

Runtimes: "onnxruntime" (Keras models through tf2onnx, ONNX models as they are), "tflite" (XNNPACK; Keras
models) and "tensorflow" (a `tf.function` of the Keras model).

Example:

>>> result = spa.prune(model, latency=0.5, runtime="onnxruntime")     # doctest: +SKIP
>>> batch16 = spa.prune(model, latency=0.5, input_shape=(16, 224, 224, 3))  # doctest: +SKIP
>>> result.plan.target["measured_speedup"]                             # doctest: +SKIP
1.97
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np

from spa_keras.common.errors import InputError
from spa_keras.planning.runtimes import RUNTIMES

THREADS = 2
RUNS = 20
ROUNDS = 6
TOLERANCE = 0.04  # a measured latency within this fraction of the goal ends the search
MAX_FLOPS = 0.95


class Timer:
    """One model compiled for one runtime at fixed inputs; calling it runs one inference."""

    def __init__(self, model, runtime: str, input_shapes: dict, threads: int = THREADS):
        self.threads = threads
        if runtime not in RUNTIMES:
            raise InputError(f"runtime={runtime!r}: one of {', '.join(RUNTIMES)}")
        rng = np.random.default_rng(0)
        self.feeds = [rng.uniform(0, 1, tuple(shape)).astype("float32") for shape in input_shapes.values()]
        keras_model = hasattr(model, "layers")
        if runtime != "onnxruntime" and not keras_model:
            raise InputError(f"latency target on {runtime}: timing runs Keras models there; an ONNX model is timed "
                             "on onnxruntime (runtime='onnxruntime')")
        self.run = getattr(self, f"_{runtime}")(model)

    def __call__(self):
        return self.run()

    def _onnxruntime(self, model):
        import onnxruntime as ort

        if hasattr(model, "layers"):
            from spa_keras.bridges.keras_to_onnx import keras_to_onnx

            model = keras_to_onnx(model)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        # idle worker threads sleep instead of spinning: two sessions timed in turns (and anything else on the
        # machine) otherwise lose the cores to each other's spinning, which adds the same time to both models and
        # pulls measured speed-ups towards 1 (MobileNetV2 at batch 16: 1.6x spinning, 1.8-2.0x not; kernels 1.9x)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 4
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feed = {i.name: x for i, x in zip(session.get_inputs(), self.feeds)}
        return lambda: session.run(None, feed)

    def _tflite(self, model):
        from ai_edge_litert.interpreter import Interpreter

        from spa_keras.bridges.keras_to_tf import keras_to_tflite

        interpreter = Interpreter(model_content=keras_to_tflite(model), num_threads=self.threads)
        details = interpreter.get_input_details()
        for d, x in zip(details, self.feeds):
            interpreter.resize_tensor_input(d["index"], x.shape)
        interpreter.allocate_tensors()

        def run():
            for d, x in zip(details, self.feeds):
                interpreter.set_tensor(d["index"], x)
            interpreter.invoke()
        return run

    def _tensorflow(self, model):
        import tensorflow as tf

        call = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
        feeds = [tf.constant(x) for x in self.feeds]
        return lambda: tf.nest.map_structure(lambda t: t.numpy(), call(*feeds))


def interleaved(runs_of: tuple, runs: int = RUNS, warmup: int = 5) -> list[list[float]]:
    """Seconds of each callable in `runs_of` over `runs` turns (one run of each per turn, so load changes hit all
    alike), after `warmup` turns."""
    for _ in range(warmup):
        for run in runs_of:
            run()
    times: list[list[float]] = [[] for _ in runs_of]
    for _ in range(runs):
        for t, run in zip(times, runs_of):
            start = time.perf_counter()
            run()
            t.append(time.perf_counter() - start)
    return times


def lower_quartile(times: list[float]) -> float:
    """The statistic latencies are compared by: other work on the machine disturbs it less than the median."""
    return statistics.quantiles(times, n=4)[0]


def paired_ratio(a: list[float], b: list[float]) -> float:
    """The median over turns of `a[i] / b[i]` (times of two models run in the same turn).

    Load on a shared machine drifts over seconds; two runs in one turn see the same load, so their ratio cancels
    it, and the median drops the turns where a burst hit only one of them. Measured here (MobileNetV2, batch 16,
    onnxruntime, 8 repeats of 20 turns): speed-ups by this statistic spread with a standard deviation of 0.024,
    as a ratio of two lower quartiles 0.066.

    >>> paired_ratio([2.0, 2.2, 9.0], [1.0, 1.0, 1.1])
    2.2
    """
    return float(statistics.median(x / y for x, y in zip(a, b)))


def speedup(original: Timer, slim: Timer, runs: int = RUNS) -> float:
    """Latency of `original` over latency of `slim`: the median of their per-turn ratios (`paired_ratio`) over
    interleaved runs."""
    a, b = interleaved((original, slim), runs)
    return paired_ratio(a, b)


def next_fraction(points: list[tuple[float, float]], goal: float) -> float:
    """The planned fraction (`points`: (planned, measured latency fraction = 1 / speed-up)) to try next: linear
    interpolation at the two points that bracket `goal`, or extrapolation from the last two when none lies beyond.

    >>> next_fraction([(0.0, 1.0), (0.5, 0.6)], goal=0.5)     # planning 0.5 gave 0.6 of the latency: go further
    0.625
    >>> next_fraction([(0.0, 1.0), (0.5, 0.6), (0.7, 0.4)], goal=0.5)
    0.6
    """
    pts = sorted(points)
    above = [p for p in pts if p[1] <= goal]  # latency low enough
    hi = above[0] if above else None
    below = [p for p in pts if p[1] > goal and (hi is None or p[0] < hi[0])]  # latency still too high, before hi
    a, b = (below[-1], hi) if below and hi else (pts[-2], pts[-1]) if len(pts) > 1 else (pts[0], pts[0])
    if b[1] == a[1]:
        f = (a[0] + b[0]) / 2 if hi else min(a[0] + 0.1, MAX_FLOPS)
    else:
        f = a[0] + (goal - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
    lo, top = (below[-1][0] if below else 0.0), (hi[0] if hi else MAX_FLOPS)
    if not lo < f < top:  # outside the bracket (noisy timings, or extrapolation too far): bisect it
        f = (lo + top) / 2
    return round(min(max(f, 0.0), MAX_FLOPS), 4)


class SpeedupMeter:
    """`measure(slim_model) -> speed-up` against `original`, compiled once, on `runtime`."""

    def __init__(self, original, runtime: str, input_shapes: dict, runs: int = RUNS):
        self.base = Timer(original, runtime, input_shapes)
        self.runtime, self.input_shapes, self.runs = runtime, input_shapes, runs

    def base_seconds(self) -> float:
        """The original's latency (lower quartile of `runs` runs)."""
        times, = interleaved((self.base,), self.runs)
        return lower_quartile(times)

    def __call__(self, slim) -> float:
        return speedup(self.base, Timer(slim, self.runtime, self.input_shapes), self.runs)


def latency_plan(amount: float, plan_at: Callable, measure: Callable, rounds: int = ROUNDS,
                 tolerance: float = TOLERANCE, say=None, what: str = ""):
    """The plan whose measured speed-up is closest to removing `amount` of the latency.

    `plan_at(fraction)` makes a plan that removes `fraction` of what it plans on (the latency a per-layer table
    predicts, or FLOPs; its `target["reached"]`); `measure(plan)` is the speed-up of its slim model; `say(line)`
    reports each round. The plan's target records the rounds (planned fraction, FLOPs removed, measured speed-up),
    the FLOPs removed and the measured speed-up of the chosen one.
    """
    goal = 1.0 - amount
    say = say or (lambda line: None)
    points, measured, plans = [(0.0, 1.0)], [], []
    fraction = amount
    for k in range(rounds):
        plan = plan_at(fraction)
        plans.append(plan)
        reached = plan.target["reached"]
        removed_flops = plan.target.get("flops_removed", reached)
        ratio = measure(plan)
        measured.append({"planned": round(reached, 4), "flops": round(removed_flops, 4), "speedup": round(ratio, 4)})
        planned = f"planned -{reached:.1%}, " if plan.target.get("kind") == "latency" else ""
        say(f"latency target {amount:.0%}{what}: round {k + 1}: {planned}FLOPs -{removed_flops:.1%} -> "
            f"{ratio:.2f}x (aim {1 / goal:.2f}x)")
        points.append((reached, 1 / ratio))
        if abs(1 / ratio - goal) <= tolerance * goal:
            break
        following = next_fraction(points, goal)
        if any(abs(following - f) < 0.002 for f, _ in points):
            break
        fraction = following
    best = min(range(len(measured)), key=lambda i: abs(1 / measured[i]["speedup"] - goal))
    plan = plans[best]
    plan.target.update(kind="latency", amount=amount, flops_removed=measured[best]["flops"],
                       reached=round(1 - 1 / measured[best]["speedup"], 6),
                       measured_speedup=measured[best]["speedup"], rounds=measured)
    return plan
