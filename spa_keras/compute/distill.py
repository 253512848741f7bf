"""ZeroQ's distilled data in TensorFlow: inputs optimised until every BatchNorm layer sees the batch statistics it
keeps as running statistics.

The loss compares, at every BatchNorm input, the batch mean with the running mean (in units of the running standard
deviation) and the log batch variance with the log running variance, so that every layer counts alike; when the
model's class output is given too, a cross-entropy towards a class per input (DeepInversion) makes the inputs look
like the classes the model knows; with no BatchNorm statistics, DeepInversion's image prior (total variation and L2
of the inputs) keeps them images rather than adversarial noise. Adam optimises the inputs.

Example:

>>> inputs, steps = distil(probe, targets, noise, steps=200, learning_rate=0.1)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np


# weight of the class loss beside the BatchNorm losses (DeepInversion's idea: inputs the model puts in a class
# make the last layers' Hessians look like the data's). Measured on three zoo nets at -50% FLOPs, data-free,
# round_to auto / 1: none 72.7/79.8, 79.1/90.6, 77.9/80.4 (Flatten-Dense MNIST, the CNN, ResNet-BN);
# 0.2: 89.4/87.1, 81.5/94.3, 78.4/76.5; 1.0: 84.4/88.8, 77.0/90.9, 76.5/77.0
CLASS_WEIGHT = 0.2


# DeepInversion's image prior, used where no BatchNorm statistics say what the data looked like (BatchNorm folded
# into an ONNX graph's convolutions, Keras nets without BatchNorm): weights of the inputs' total variation and mean
# square beside the class loss (CLASS_WEIGHT). Optimised for the classes alone, the inputs become adversarial noise
# (mean 0.6, spread 1.1 on [0, 1] images) whose Hessians are nothing like the data's. -30 / -50% FLOPs, data-free, on
# 2,000 test images: PyTorch CNN with BatchNorm folded (88.0%) classes alone 64.0 / 32.3%, with the prior
# 84.4 / 79.8% (TV 0.3: 83.8 / 71.2%; TV 3, L2 1: 74.2 / 61.6%); ConvNeXt-style (84.2%) 83.6 / 75.7% -> 83.5 / 80.8%;
# conv stack without BatchNorm (76.2%) 75.9 / 75.0% -> 75.7 / 75.6%. Where BatchNorm statistics are matched, a total
# variation of 0.1 / 0.25 / 0.5 moved four nets by -2.5 to +5.9 points with no consistent sign: none there.
TV_WEIGHT = 0.6
L2_WEIGHT = 0.2


def prior_weights(has_norms: bool, image_axes: tuple[int, ...], tv_weight: float | None,
                  l2_weight: float | None) -> tuple[float, float]:
    """(total-variation weight, L2 weight) of the image prior: those given, else none for a model with BatchNorm
    statistics and `TV_WEIGHT`, `L2_WEIGHT` without; no total variation where the inputs have no image axes."""
    tv = (0.0 if has_norms else TV_WEIGHT) if tv_weight is None else float(tv_weight)
    l2 = (0.0 if has_norms else L2_WEIGHT) if l2_weight is None else float(l2_weight)
    return (tv if image_axes else 0.0), l2


def image_prior(inputs: Any, image_axes: tuple[int, ...], tv_weight: float, l2_weight: float) -> Any:
    """DeepInversion's prior on the inputs: `tv_weight` x the mean absolute difference of neighbours along each of
    `image_axes` (smooth images rather than adversarial noise) plus `l2_weight` x the mean square."""
    import tensorflow as tf

    loss = 0.0
    if l2_weight:
        loss += l2_weight * tf.reduce_mean(inputs ** 2)
    for axis in image_axes if tv_weight else ():
        size = inputs.shape[axis]
        ahead = tf.gather(inputs, tf.range(1, size), axis=axis)
        behind = tf.gather(inputs, tf.range(0, size - 1), axis=axis)
        loss += tv_weight * tf.reduce_mean(tf.abs(ahead - behind))
    return loss


def _class_output(extra: list) -> np.ndarray | None:
    """The probe's class output ([batch, classes >= 2]) after the BatchNorm inputs, or None."""
    if len(extra) != 1:
        return None
    out = np.asarray(extra[0])
    return out if out.ndim == 2 and out.shape[-1] >= 2 else None


def _probabilities(out: np.ndarray) -> bool:
    """Whether a class output is softmax probabilities (non-negative rows summing to 1) rather than logits."""
    return bool((out >= 0).all() and np.allclose(out.sum(-1), 1.0, atol=1e-3))


@dataclasses.dataclass(frozen=True)
class NormTarget:
    """What one BatchNorm's input should look like: reduced over `reduce` axes, mean `mean`, variance
    `variance` (the running statistics, epsilon included)."""

    reduce: tuple[int, ...]
    mean: np.ndarray
    variance: np.ndarray


def distil(probe: Callable, targets: list[NormTarget], x: np.ndarray, steps: int, learning_rate: float,
           budget: float | None = None, class_weight: float = CLASS_WEIGHT, image_axes: tuple[int, ...] = (),
           tv_weight: float | None = None, l2_weight: float | None = None) -> tuple[np.ndarray, int]:
    """Optimise the inputs `x` for `steps` Adam steps; `probe(inputs)` gives the BatchNorm inputs of the model in
    inference mode, one per target, and may give the model's class output after them ([batch, classes], logits or
    probabilities): then each input is also pushed towards a class (input i towards class i mod classes, weight
    `class_weight`). Returns the inputs and the steps run: all of them, unless a `budget` of seconds was given and
    ran out (then the result depends on the machine's speed and load).

    Args:
        image_axes: the spatial axes of `x` when it is an image batch (`spa_keras.obspa.hessians.image_axes`): the
            image prior's total variation runs along them.
        tv_weight, l2_weight: the image prior's weights (None: `prior_weights`, none where BatchNorm statistics
            are matched).
    """
    import keras
    import tensorflow as tf

    goals = [(list(t.reduce), tf.constant(t.mean), tf.constant(t.variance)) for t in targets]
    inputs = tf.Variable(x)
    optimizer = keras.optimizers.Adam(learning_rate)
    first = probe([x], training=False)
    first = list(first) if isinstance(first, (list, tuple)) else [first]
    classes = _class_output(first[len(goals):])
    if classes is None:
        class_weight = 0.0
    tv_weight, l2_weight = prior_weights(bool(goals), image_axes, tv_weight, l2_weight)
    if not goals and not class_weight:  # nothing to optimise for
        return x, 0
    labels = tf.constant(np.arange(len(x)) % (classes.shape[-1] if classes is not None else 1), tf.int32)
    probabilities = classes is not None and _probabilities(classes)

    @tf.function(autograph=False)  # plain Python control flow; AutoGraph would write temporary files
    def step() -> Any:
        with tf.GradientTape() as tape:
            outs = probe([inputs], training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            loss = 0.0
            for z, (reduce, mean, variance) in zip(outs, goals):
                m, v = tf.nn.moments(z, reduce)
                loss += tf.reduce_mean((m - mean) ** 2 / variance)
                loss += tf.reduce_mean((tf.math.log(v + 1e-6) - tf.math.log(variance)) ** 2)
            if class_weight:
                logits = outs[len(goals)]
                logits = tf.math.log(tf.maximum(logits, 1e-8)) if probabilities else logits
                loss += class_weight * tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            loss += image_prior(inputs, image_axes, tv_weight, l2_weight)
        optimizer.apply_gradients([(tape.gradient(loss, inputs), inputs)])
        return loss

    start, done = time.perf_counter(), 0
    while done < steps:
        step()
        done += 1
        if budget is not None and time.perf_counter() - start > budget:
            break
    return inputs.numpy(), done
