"""Timing models on a runtime: one compiled `Timer` per model, interleaved runs (one of each model per turn, so load
changes hit all alike), and speed-ups as the median of per-turn ratios.

Runtimes: "onnxruntime" (Keras models through tf2onnx, ONNX models as they are), "tflite" (XNNPACK; Keras
models) and "tensorflow" (a `tf.function` of the Keras model); `spa_keras.bridges.runtimes` compiles them.

Example:

>>> paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 1.0])
2.0
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from spa_keras.bridges.runtimes import runner
from spa_keras.common.errors import InputError
from spa_keras.formats.keras.source import is_keras_model
from spa_keras.planning.runtimes import RUNTIMES

THREADS = 2
RUNS = 20


class Timer:
    """One model compiled for one runtime at fixed inputs; calling it runs one inference."""

    def __init__(self, model, runtime: str, input_shapes: dict, threads: int = THREADS):
        self.threads = threads
        if runtime not in RUNTIMES:
            raise InputError(f"runtime={runtime!r}: one of {', '.join(RUNTIMES)}")
        rng = np.random.default_rng(0)
        self.feeds = [rng.uniform(0, 1, tuple(shape)).astype("float32") for shape in input_shapes.values()]
        if runtime != "onnxruntime" and not is_keras_model(model):
            raise InputError(f"latency target on {runtime}: timing runs Keras models there; an ONNX model is timed "
                             "on onnxruntime (runtime='onnxruntime')")
        self.run = runner(model, runtime, self.feeds, threads, keras_model=is_keras_model(model))

    def __call__(self):
        return self.run()


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
