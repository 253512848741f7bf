"""Where OBSPA's Hessians come from: the inputs the network is run on, or none at all.

Each consumer's Hessian is E[x xᵀ] over its input columns, so a provider only has to say which model inputs to run:

- `BatchNormInputs` (data-free): inputs optimised until every BatchNorm layer sees the batch mean and variance it
  keeps as running statistics (ZeroQ's distilled data, `spa_keras.compute.distill`): what the training data looked
  like to the network, read off the network itself. Models whose format can optimise inputs through them (Keras:
  it needs gradients); with no BatchNorm it is Gaussian noise.
- `GaussianInputs` (data-free): standard normal inputs.
- `Calibration(data)`: real images (in-distribution or any other); `data` as the gradient criteria take it.
- `IdentityHessian`: no inputs, H = I: no compensation, scores are relative weight magnitudes (the baseline).

Example:

>>> provider = get_provider("gaussian", samples=64)
>>> provider
GaussianInputs(samples=64, seed=0, batch_size=None)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spa_keras.common.console import track
from spa_keras.common.errors import InputError

if TYPE_CHECKING:
    from spa_keras.analysis.groups import Analysis


# activations one batch may hold (float32): what sets the batch size when none is given
BATCH_BYTES = 2 << 30


def activation_floats(analysis: Analysis) -> int:
    """Floats of all activations of one sample (every tensor of the analysed graph at batch 1)."""
    graph = analysis.graph
    return int(sum(np.prod(s) for name, s in graph.shapes.items() if s and name not in graph.params))


def live_floats(analysis: Analysis) -> int:
    """Floats of the activations alive at once at the peak of one sample's forward pass (graph order)."""
    from collections import Counter

    graph = analysis.graph
    uses = Counter(t for node in graph.nodes for t in node.inputs if t and t not in graph.params)
    size = lambda t: int(np.prod(graph.shapes.get(t) or (1,)))  # noqa: E731
    live = {t: size(t) for t in graph.inputs}
    peak = sum(live.values())
    for node in graph.nodes:
        for t in node.outputs:
            live[t] = size(t)
        peak = max(peak, sum(live.values()))
        for t in node.inputs:
            uses[t] -= 1
            if uses[t] == 0:
                live.pop(t, None)
    return peak


def batch_size_for(analysis: Analysis, backward: bool = False) -> int:
    """How many samples one batch may hold within `BATCH_BYTES`: a forward pass holds its live activations, a
    backward pass every activation (and its gradient)."""
    per_sample = 4 * max(2 * activation_floats(analysis) if backward else live_floats(analysis), 1)
    return int(max(1, min(256, BATCH_BYTES // per_sample)))


class InputProvider:
    """Base: `batches(analysis)` gives the model-input batches the Hessians are measured on.

    Args:
        samples: how many inputs.
        batch_size: inputs per forward pass (None: as many as fit in about 1 GB of activations).
        seed: of made-up inputs.
    """

    name = ""
    needs_inputs = True

    def __init__(self, samples: int = 128, batch_size: int | None = None, seed: int = 0) -> None:
        self.samples, self.seed = int(samples), int(seed)
        self.batch_size = None if batch_size is None else int(batch_size)

    def _batch(self, analysis: Analysis, backward: bool = False) -> int:
        return self.batch_size or batch_size_for(analysis, backward)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({options})"

    def batches(self, analysis: Analysis) -> list[Any]:
        raise NotImplementedError


def _float_specs(analysis: Analysis) -> dict[str, tuple[int, ...]]:
    """{input name: shape at batch 1}; inputs that are not floating point cannot be made up."""
    specs = analysis.source.graph_specs
    bad = [s.name for s in specs if np.dtype(s.dtype).kind != "f"]
    if bad:
        raise InputError(f"OBSPA cannot make up inputs for {', '.join(bad)} (not floating point): give "
                         "calibration= (OBSPA(calibration=data)) with real inputs")
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        graph_shape = analysis.graph.shape(spec.name) or tuple(1 if d is None else d for d in spec.shape)
        shapes[spec.name] = tuple(graph_shape)
    return shapes


def _split(arrays: dict[str, np.ndarray], batch_size: int) -> list[Any]:
    """Arrays {input: [n, ...]} as batches of `batch_size` (a bare array for one input, else a list)."""
    n = len(next(iter(arrays.values())))
    out: list[Any] = []
    for start in range(0, n, batch_size):
        part = {k: v[start:start + batch_size] for k, v in arrays.items()}
        out.append(next(iter(part.values())) if len(part) == 1 else list(part.values()))
    return out


class GaussianInputs(InputProvider):
    name = "gaussian"

    def batches(self, analysis: Analysis) -> list[Any]:
        rng = np.random.default_rng(self.seed)
        shapes = _float_specs(analysis)
        arrays = {k: rng.standard_normal((self.samples,) + s[1:]).astype(np.float32) for k, s in shapes.items()}
        return _split(arrays, self._batch(analysis))


class IdentityHessian(InputProvider):
    """H = I: nothing is run; scores are relative weight magnitudes and kept weights stay as they are."""

    name = "identity"
    needs_inputs = False

    def batches(self, analysis: Analysis) -> list[Any]:
        return []


class Calibration(InputProvider):
    """Real inputs: `data` is arrays x (or (x, y)), a tf.data.Dataset or a generator of batches (labels unused)."""

    name = "calibration"

    def __init__(self, data: Any, samples: int = 1024, batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__(samples, batch_size, seed)
        self._data = data

    def batches(self, analysis: Analysis) -> list[Any]:
        from spa_keras.compute.data import Batches, as_numpy, length

        data = self._data
        if hasattr(data, "shape") or isinstance(data, (list, dict)):  # inputs alone: labels are not used
            data = (data, np.zeros(length(data)))
        batches: list[Any] = []
        taken = 0
        size = self._batch(analysis)
        for x, _ in Batches.of(data).take(max(1, -(-self.samples // size)), size):
            x = x if isinstance(x, (list, dict)) else as_numpy(x).astype(np.float32)
            batches.append(x)
            taken += length(x)
            if taken >= self.samples:
                break
        return batches


# The data-free inputs' default work, fixed so that it is the same on every machine: `SAMPLES` inputs optimised for
# `STEPS` steps, fewer (steps first, down to `MIN_STEPS`, then samples, down to `MIN_SAMPLES`) when that would
# take more than `WORK_FLOPS` forward-pass FLOPs (a backward pass costs about twice as much again). On the MNIST
# CNN of the zoo at -60% FLOPs: 128 x 200 93.1%, 64 x 100 92.6%, 64 x 50 54%, 32 x 100 78.7% (few samples leave
# the Dense layers' Hessians rank-deficient; few steps leave the inputs unlike the data). With the refit's ridge
# towards the original weights, seven zoo nets at -30/-50% FLOPs, 64 inputs x 100 / 200 / 300 steps, mean accuracy
# 81.3 / 83.6 / 84.2% (the CNN at -50%: 83.0 / 89.4 / 96.2%; MobileNetV3-style 67.9 / 78.5 / 75.7%).
SAMPLES, STEPS, MIN_SAMPLES, MIN_STEPS = 64, 200, 16, 30
WORK_FLOPS = 4e12


def default_work(flops_per_sample: float, work_flops: float = WORK_FLOPS) -> tuple[int, int]:
    """(samples, steps) of the data-free inputs for a model of `flops_per_sample` forward FLOPs.

    >>> default_work(3.5e7)          # a 28x28 CNN
    (64, 200)
    >>> default_work(8.2e9)          # ResNet50 at 224x224
    (16, 30)
    """
    samples, steps = SAMPLES, STEPS
    per_step = max(float(flops_per_sample), 1.0)
    if samples * steps * per_step > work_flops:
        steps = max(MIN_STEPS, int(work_flops // (samples * per_step)))
    if samples * steps * per_step > work_flops:
        samples = max(MIN_SAMPLES, int(work_flops // (steps * per_step)) // 8 * 8)
    return samples, steps


def work_for(analysis: Analysis, samples: int | None, steps: int | None) -> tuple[int, int]:
    """(samples, steps) of the data-free inputs: those given, the others from `default_work` of the model's FLOPs
    (with a warning when they are fewer than `SAMPLES` x `STEPS`)."""
    import warnings

    default_samples, default_steps = default_work(analysis.counts.flops)
    if (samples is None and default_samples < SAMPLES) or (steps is None and default_steps < STEPS):
        warnings.warn(f"OBSPA: {default_samples} synthetic inputs x {default_steps} optimisation steps for this model "
                      f"of {analysis.counts.flops / 1e9:.1f} GFLOPs (instead of {SAMPLES} x {STEPS}, to bound the "
                      "time); give samples=/steps= for more, or calibration= data", stacklevel=3)
    return (default_samples if samples is None else int(samples)), (default_steps if steps is None else int(steps))


def image_axes(x: Any, channels_last: bool) -> tuple[int, ...]:
    """The two spatial axes of an image batch `x` ([batch, 3 axes] with the channels first or last), else ().

    The channels are where the format puts them (`channels_last`: Keras), unless only the other end is small
    enough to be channels (ONNX graphs of TensorFlow models take NHWC images).

    >>> image_axes(np.zeros((2, 28, 28, 1)), channels_last=False), image_axes(np.zeros((2, 3, 8, 8)), True)
    ((1, 2), (2, 3))
    """
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        return ()
    channel, other = (3, 1) if channels_last else (1, 3)
    if x.shape[channel] > IMAGE_CHANNELS >= x.shape[other]:
        channel = other
    return (1, 2) if channel == 3 else (2, 3)


# the most channels an image input has (grey, RGB, RGBA): what tells NHWC from NCHW when the format does not
IMAGE_CHANNELS = 4


class BatchNormInputs(InputProvider):
    """Inputs optimised so each BatchNorm layer's batch statistics match its running mean and variance.

    The work is fixed (`samples` inputs, `steps` optimisation steps each; by default `default_work` of the model's
    FLOPs), so that the same model, options and seed give the same inputs on any machine and under any load.

    Args:
        samples: how many inputs to make (None: `default_work`).
        steps: Adam steps of the optimisation of each batch, a forward and backward pass each (None:
            `default_work`).
        learning_rate: Adam's learning rate on the inputs.
        budget: None (the default): all the work is done. Seconds: an explicit opt-in to stop when they run out
            (fewer samples or steps, said in a warning); the result then depends on the machine's speed and load.
    """

    name = "batchnorm"

    def __init__(self, samples: int | None = None, batch_size: int | None = None, seed: int = 0,
                 steps: int | None = None, learning_rate: float = 0.1, budget: float | None = None) -> None:
        super().__init__(0 if samples is None else samples, batch_size, seed)
        self.samples_given, self.steps_given = samples, steps
        self.learning_rate = float(learning_rate)
        self.budget = None if budget is None else float(budget)

    def work(self, analysis: Analysis) -> tuple[int, int]:
        """(samples, steps) this model gets: those given, the others from `default_work` (a warning says when the
        model is so large that they are fewer than the usual `SAMPLES` x `STEPS`)."""
        return work_for(analysis, self.samples_given, self.steps_given)

    def batches(self, analysis: Analysis) -> list[Any]:
        import time
        import warnings

        from spa_keras.compute.distill import distil

        samples, steps_wanted = self.work(analysis)
        noise = GaussianInputs(samples, self._batch(analysis, backward=True), self.seed).batches(analysis)
        probe = analysis.source.activations().norm_probe()
        if probe is None:  # the backend said why
            return noise
        model, targets = probe
        out: list[np.ndarray] = []
        steps = steps_wanted  # what every batch got, unless the budget cut one short (none made: samples=0)
        start = time.perf_counter()
        for x in track(noise, "OBSPA: synthetic inputs"):
            left = None if self.budget is None else self.budget - (time.perf_counter() - start)
            if out and left is not None and left < (time.perf_counter() - start) / len(out):  # would not fit
                break
            inputs, steps = distil(model, targets, x, steps_wanted, self.learning_rate, left,
                                   image_axes=image_axes(x, analysis.source.activations().channels_last))
            out.append(inputs)
        made = sum(len(b) for b in out)
        if made < samples or steps < steps_wanted:
            warnings.warn(f"OBSPA: {made} of {samples} synthetic inputs, {steps} of {steps_wanted} optimisation "
                          f"steps, within budget={self.budget:g} s; the result depends on this machine's speed and "
                          "load: leave budget=None for the full work, or give calibration= data", stacklevel=2)
        return out


PROVIDERS: dict[str, type[InputProvider]] = {p.name: p for p in (BatchNormInputs, GaussianInputs, IdentityHessian)}


def get_provider(hessian: str | InputProvider, **options: Any) -> InputProvider:
    """A provider from a name ('batchnorm', 'gaussian', 'identity') or a provider instance."""
    if isinstance(hessian, InputProvider):
        return hessian
    try:
        cls = PROVIDERS[str(hessian).lower()]
    except KeyError as exc:
        raise InputError(f"hessian={hessian!r}: choose one of {', '.join(PROVIDERS)}, or give calibration= "
                         "data") from exc
    return cls(**options)
