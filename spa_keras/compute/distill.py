"""ZeroQ's distilled data in TensorFlow: inputs optimised until every BatchNorm layer sees the batch statistics it
keeps as running statistics.

The loss compares, at every BatchNorm input, the batch mean with the running mean (in units of the running standard
deviation) and the log batch variance with the log running variance, so that every layer counts alike; Adam
optimises the inputs.

Example:

>>> inputs, steps = distil(probe, targets, noise, steps=200, learning_rate=0.1)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class NormTarget:
    """What one BatchNorm's input should look like: reduced over `reduce` axes, mean `mean`, variance
    `variance` (the running statistics, epsilon included)."""

    reduce: tuple[int, ...]
    mean: np.ndarray
    variance: np.ndarray


def distil(probe: Callable, targets: list[NormTarget], x: np.ndarray, steps: int, learning_rate: float,
           budget: float | None = None) -> tuple[np.ndarray, int]:
    """Optimise the inputs `x` for `steps` Adam steps; `probe(inputs)` gives the BatchNorm inputs of the model in
    inference mode. Returns the inputs and the steps run: all of them, unless a `budget` of seconds was given and
    ran out (then the result depends on the machine's speed and load)."""
    import keras
    import tensorflow as tf

    goals = [(list(t.reduce), tf.constant(t.mean), tf.constant(t.variance)) for t in targets]
    inputs = tf.Variable(x)
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step() -> Any:
        with tf.GradientTape() as tape:
            outs = probe([inputs], training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            loss = 0.0
            for z, (reduce, mean, variance) in zip(outs, goals):
                m, v = tf.nn.moments(z, reduce)
                loss += tf.reduce_mean((m - mean) ** 2 / variance)
                loss += tf.reduce_mean((tf.math.log(v + 1e-6) - tf.math.log(variance)) ** 2)
        optimizer.apply_gradients([(tape.gradient(loss, inputs), inputs)])
        return loss

    start, done = time.perf_counter(), 0
    while done < steps:
        step()
        done += 1
        if budget is not None and time.perf_counter() - start > budget:
            break
    return inputs.numpy(), done
