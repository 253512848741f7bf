"""Where OBSPA's Hessians come from: the inputs the network is run on, or none at all.

Each consumer's Hessian is E[x xᵀ] over its input columns, so a provider only has to say which model inputs to run:

- `BatchNormInputs` (data-free): inputs optimised until every BatchNorm layer sees the batch mean and variance it
  keeps as running statistics (ZeroQ's distilled data): what the training data looked like to the network, read off
  the network itself. Keras models (the optimisation needs gradients); with no BatchNorm it is Gaussian noise.
- `GaussianInputs` (data-free): standard normal inputs.
- `Calibration(data)`: real images (in-distribution or any other); `data` as the gradient criteria take it.
- `IdentityHessian`: no inputs, H = I: no compensation, scores are relative weight magnitudes (the baseline).

Example:

>>> provider = get_provider("gaussian", samples=64)
>>> provider
GaussianInputs(samples=64, batch_size=32, seed=0)
"""

from __future__ import annotations

import numpy as np

from spa_keras.errors import InputError


class InputProvider:
    """Base: `batches(analysis)` gives the model-input batches the Hessians are measured on."""

    name = ""
    needs_inputs = True

    def __init__(self, samples: int = 256, batch_size: int = 32, seed: int = 0):
        self.samples, self.batch_size, self.seed = int(samples), int(batch_size), int(seed)

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({options})"

    def batches(self, analysis) -> list:
        raise NotImplementedError


def _float_specs(analysis):
    """{input name: shape at batch 1}; inputs that are not floating point cannot be made up."""
    from spa_keras.bridges import keras_io, onnx_io
    from spa_keras.convert import is_keras_model

    source = analysis.graph.source
    specs = keras_io.input_specs(source) if is_keras_model(source) else onnx_io.input_specs(source)
    bad = [s.name for s in specs if np.dtype(s.dtype).kind != "f"]
    if bad:
        raise InputError(f"OBSPA cannot make up inputs for {', '.join(bad)} (not floating point): give "
                         "calibration= (OBSPA(calibration=data)) with real inputs")
    shapes = {}
    for spec in specs:
        graph_shape = analysis.graph.shape(spec.name) or tuple(1 if d is None else d for d in spec.shape)
        shapes[spec.name] = tuple(graph_shape)
    return shapes


def _split(arrays: dict, batch_size: int) -> list:
    n = len(next(iter(arrays.values())))
    out = []
    for start in range(0, n, batch_size):
        part = {k: v[start:start + batch_size] for k, v in arrays.items()}
        out.append(next(iter(part.values())) if len(part) == 1 else list(part.values()))
    return out


class GaussianInputs(InputProvider):
    name = "gaussian"

    def batches(self, analysis):
        rng = np.random.default_rng(self.seed)
        shapes = _float_specs(analysis)
        arrays = {k: rng.standard_normal((self.samples,) + s[1:]).astype(np.float32) for k, s in shapes.items()}
        return _split(arrays, self.batch_size)


class IdentityHessian(InputProvider):
    """H = I: nothing is run; scores are relative weight magnitudes and kept weights stay as they are."""

    name = "identity"
    needs_inputs = False

    def batches(self, analysis):
        return []


class Calibration(InputProvider):
    """Real inputs: `data` is arrays x (or (x, y)), a tf.data.Dataset or a generator of batches (labels unused)."""

    name = "calibration"

    def __init__(self, data, samples: int = 1024, batch_size: int = 32, seed: int = 0):
        super().__init__(samples, batch_size, seed)
        self._data = data

    def batches(self, analysis):
        from spa_keras.tf_ops import Batches, as_numpy, length

        data = self._data
        if hasattr(data, "shape") or isinstance(data, (list, dict)):  # inputs alone: labels are not used
            data = (data, np.zeros(length(data)))
        batches, taken = [], 0
        for x, _ in Batches.of(data).take(max(1, -(-self.samples // self.batch_size)), self.batch_size):
            x = x if isinstance(x, (list, dict)) else as_numpy(x).astype(np.float32)
            batches.append(x)
            taken += length(x)
            if taken >= self.samples:
                break
        return batches


class BatchNormInputs(InputProvider):
    """Inputs optimised so each BatchNorm layer's batch statistics match its running mean and variance.

    Args:
        samples: how many inputs to make.
        steps: Adam steps of the optimisation (each a forward and backward pass over all samples).
        learning_rate: Adam's learning rate on the inputs.
    """

    name = "batchnorm"

    def __init__(self, samples: int = 256, batch_size: int = 32, seed: int = 0, steps: int = 200,
                 learning_rate: float = 0.1):
        super().__init__(samples, batch_size, seed)
        self.steps, self.learning_rate = int(steps), float(learning_rate)

    def batches(self, analysis):
        from spa_keras.convert import is_keras_model

        source = analysis.graph.source
        noise = GaussianInputs(self.samples, self.batch_size, self.seed).batches(analysis)
        norms = _batch_norms(source) if is_keras_model(source) else []
        if not norms or len(source.inputs) != 1:
            return noise
        return [_distil(source, norms, x, self.steps, self.learning_rate) for x in noise]


def _batch_norms(model):
    """The top-level BatchNormalization layers of a Keras model whose input can be read (called once)."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and len(layer._inbound_nodes) == 1:
            found.append(layer)
    return found


def _distil(model, norms, x, steps, learning_rate):
    """ZeroQ: Adam on the inputs, loss Σ_l ‖mean_l − μ_l‖² + ‖std_l − σ_l‖² over the BatchNorm inputs."""
    import keras
    import tensorflow as tf

    probe = keras.Model(model.inputs, [n.input for n in norms])
    targets = []
    for n in norms:
        axes = [a % len(n.input.shape) for a in np.atleast_1d(n.axis)]
        reduce = [a for a in range(len(n.input.shape)) if a not in axes]
        targets.append((reduce, tf.constant(n.moving_mean.numpy()), tf.sqrt(tf.constant(n.moving_variance.numpy())
                                                                             + n.epsilon)))
    inputs = tf.Variable(x)
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outs = probe(inputs, training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            loss = 0.0
            for z, (reduce, mean, std) in zip(outs, targets):
                m, v = tf.nn.moments(z, reduce)
                loss += tf.reduce_sum((m - mean) ** 2) / tf.cast(tf.size(m), tf.float32)
                loss += tf.reduce_sum((tf.sqrt(v + 1e-8) - std) ** 2) / tf.cast(tf.size(m), tf.float32)
        optimizer.apply_gradients([(tape.gradient(loss, inputs), inputs)])
        return loss

    for _ in range(steps):
        step()
    return inputs.numpy()


PROVIDERS = {p.name: p for p in (BatchNormInputs, GaussianInputs, IdentityHessian)}


def get_provider(hessian, **options) -> InputProvider:
    """A provider from a name ('batchnorm', 'gaussian', 'identity') or a provider instance."""
    if isinstance(hessian, InputProvider):
        return hessian
    try:
        cls = PROVIDERS[str(hessian).lower()]
    except KeyError as exc:
        raise InputError(f"hessian={hessian!r}: choose one of {', '.join(PROVIDERS)}, or give calibration= "
                         "data") from exc
    return cls(**options)
