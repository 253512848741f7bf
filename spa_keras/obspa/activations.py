"""The input activations of OBSPA's consumers, as the columns their weight matrices multiply, in TensorFlow ops.

`KerasReader` and `OnnxReader` run a model (a Keras model, or an ONNX model in onnxruntime) on a batch of model inputs and
returns each consumer's input; `columns` turns it into a [rows, d_in] matrix: a Dense layer's features (every
leading position a row), a Conv's im2col patches (`tf.image.extract_patches`, one row per output position,
columns reordered to the graph kernel's (channel, kh, kw) order). `Moments` accumulates what the scores and the
refit need over streamed batches; activations are never all held at once.

Example:

>>> import numpy as np, tensorflow as tf
>>> spec = PatchSpec((3, 3), pads=(1, 1, 1, 1))
>>> patch_columns(tf.ones((1, 4, 4, 2)), spec, channels_last=True).shape
TensorShape([16, 18])
"""

from __future__ import annotations

import numpy as np

from spa_keras.obspa.consumers import Consumer, PatchSpec

# rows x columns of one im2col chunk: larger batches are cut into chunks of about this many floats
CHUNK_FLOATS = 1 << 24


def patch_columns(x, spec: PatchSpec, channels_last: bool):
    """[rows, C·kh·kw] im2col columns of a 4-D activation for a convolution with `spec`."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x, tf.float32)
    if not channels_last:
        x = tf.transpose(x, [0, 2, 3, 1])
    (kh, kw), channels = spec.kernel, x.shape[-1]
    padding = "SAME"
    if spec.pads != "SAME":
        top, left, bottom, right = spec.pads
        x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
        padding = "VALID"
    patches = tf.image.extract_patches(x, sizes=[1, kh, kw, 1], strides=[1, *spec.strides, 1],
                                       rates=[1, *spec.dilations, 1], padding=padding)
    patches = tf.reshape(patches, [-1, kh, kw, channels])  # extract_patches orders (kh, kw, c)
    return tf.reshape(tf.transpose(patches, [0, 3, 1, 2]), [-1, channels * kh * kw])


def columns(consumer: Consumer, x):
    """The consumer's input `x` as [rows, d_in] float32 columns."""
    import tensorflow as tf

    if consumer.kind == "conv":
        return patch_columns(x, consumer.patch, consumer.channels_last)
    return tf.reshape(tf.convert_to_tensor(x, tf.float32), [-1, consumer.matrix.shape[1]])


def chunks(x, consumer: Consumer):
    """`x` cut along its batch axis so that each piece's im2col columns stay near `CHUNK_FLOATS`."""
    per_sample = max(1, int(np.prod(x.shape[1:])) * (int(np.prod(consumer.patch.kernel)) if consumer.patch else 1))
    step = max(1, CHUNK_FLOATS // per_sample)
    for start in range(0, int(x.shape[0]), step):
        yield x[start:start + step]


class Moments:
    """Sums over streamed rows of a consumer's input columns: XᵀX of the inputs it sees (`gram`), and with a
    reference input X_d beside them, X_dᵀX (`cross`) and the column sums of both. Accumulated in TensorFlow
    (float64), read as numpy."""

    def __init__(self, d: int, cross: bool = False):
        import tensorflow as tf

        self.rows = 0
        zeros = lambda *shape: tf.zeros(shape, tf.float64)  # noqa: E731
        self._sums = {"gram": zeros(d, d), "sum": zeros(d)}
        if cross:
            self._sums.update(cross=zeros(d, d), ref_sum=zeros(d))

    def __getattr__(self, name):
        sums = self.__dict__.get("_sums", {})
        if name in ("gram", "sum", "cross", "ref_sum"):
            return sums[name].numpy() if name in sums else None
        raise AttributeError(name)

    def add(self, x, reference=None):
        import tensorflow as tf

        self.rows += int(x.shape[0])
        s = self._sums
        s["gram"] += tf.cast(tf.matmul(x, x, transpose_a=True), tf.float64)
        s["sum"] += tf.reduce_sum(tf.cast(x, tf.float64), axis=0)
        if reference is not None:
            s["cross"] += tf.cast(tf.matmul(reference, x, transpose_a=True), tf.float64)
            s["ref_sum"] += tf.reduce_sum(tf.cast(reference, tf.float64), axis=0)

    def accumulate(self, consumer: Consumer, x, reference=None):
        """Add a consumer's input activation (and the reference activation of the same samples)."""
        pieces = zip(chunks(x, consumer), chunks(reference, consumer)) if reference is not None else (
            (piece, None) for piece in chunks(x, consumer))
        for piece, ref in pieces:
            self.add(columns(consumer, piece), None if ref is None else columns(consumer, ref))


class KerasReader:
    """Inputs of Keras consumers: one sub-model from the model's inputs to those layers' inputs."""

    def __init__(self, model, consumers: list[Consumer]):
        import keras

        self.model = keras.Model(model.inputs, [model.get_layer(c.source.name).input for c in consumers])
        self.count = len(consumers)

    def __call__(self, batch):
        out = self.model(batch if isinstance(batch, (list, dict)) else [batch], training=False)
        return [out] if self.count == 1 else list(out)


class OnnxReader:
    """Inputs of ONNX consumers: the model with those tensors as extra outputs, in onnxruntime."""

    def __init__(self, model, consumers: list[Consumer]):
        import onnx
        from onnx import helper

        from spa_keras.bridges import onnx_io

        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        del probe.graph.value_info[:]
        del probe.graph.output[:]
        self.tensors = list(dict.fromkeys(c.source for c in consumers))
        probe.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in self.tensors)
        self.session = onnx_io.session(probe, "OBSPA's activation model", optimize=False)
        self.index = [self.tensors.index(c.source) for c in consumers]

    def __call__(self, batch):
        names = [i.name for i in self.session.get_inputs()]
        feeds = batch if isinstance(batch, dict) else dict(zip(names, batch if isinstance(batch, (list, tuple))
                                                               else [batch]))
        values = self.session.run(self.tensors, feeds)
        return [values[i] for i in self.index]
