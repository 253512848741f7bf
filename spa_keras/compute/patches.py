"""A layer's input activation as the columns its weight matrix multiplies, and their moments, in TensorFlow ops.

`columns` turns an activation into a [rows, d_in] matrix: a dense layer's features (every leading position a
row), a convolution's im2col patches (`tf.image.extract_patches`, one row per output position, columns in the
graph kernel's (channel, kh, kw) order). `Moments` accumulates what OBSPA's scores and refit need over streamed
batches; activations are never all held at once.

Example:

>>> import numpy as np
>>> spec = PatchSpec((3, 3), pads=(1, 1, 1, 1))
>>> patch_columns(np.ones((1, 4, 4, 2)), spec, channels_last=True).shape
TensorShape([16, 18])
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

# rows x columns of one im2col chunk: larger batches are cut into chunks of about this many floats
CHUNK_FLOATS = 1 << 24


@dataclasses.dataclass(frozen=True)
class PatchSpec:
    """How a 2-D convolution reads its input: kernel size, strides, dilations and padding (explicit
    [top, left, bottom, right], or 'SAME' as TensorFlow pads)."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] | str = (0, 0, 0, 0)


@dataclasses.dataclass(frozen=True)
class InputColumns:
    """How a layer's input activation becomes the columns of its weight matrix: `width` columns, im2col patches of
    `patch` (None: a dense layer's features), read channels last (NHWC) or first (NCHW); `channels` (start, stop):
    only those input channels (one group of a grouped convolution)."""

    width: int
    patch: PatchSpec | None = None
    channels_last: bool = True
    channels: tuple[int, int] | None = None

    def select(self, x: Any) -> Any:
        """`x` with only this consumer's input channels."""
        if self.channels is None:
            return x
        start, stop = self.channels
        return x[..., start:stop] if self.channels_last else x[:, start:stop]


def patch_columns(x: Any, spec: PatchSpec, channels_last: bool) -> Any:
    """[rows, C·kh·kw] im2col columns of a 4-D activation for a convolution with `spec`."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x, tf.float32)
    if not channels_last:
        x = tf.transpose(x, [0, 2, 3, 1])
    (kh, kw), channels = spec.kernel, x.shape[-1]
    padding = "SAME"
    if not isinstance(spec.pads, str):  # explicit pads, else "SAME"
        top, left, bottom, right = spec.pads
        x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
        padding = "VALID"
    patches = tf.image.extract_patches(x, sizes=[1, kh, kw, 1], strides=[1, *spec.strides, 1],
                                       rates=[1, *spec.dilations, 1], padding=padding)
    patches = tf.reshape(patches, [-1, kh, kw, channels])  # extract_patches orders (kh, kw, c)
    return tf.reshape(tf.transpose(patches, [0, 3, 1, 2]), [-1, channels * kh * kw])


def columns(spec: InputColumns, x: Any) -> Any:
    """The input `x` as [rows, d_in] float32 columns."""
    import tensorflow as tf

    x = spec.select(x)
    if spec.patch is not None:
        return patch_columns(x, spec.patch, spec.channels_last)
    return tf.reshape(tf.convert_to_tensor(x, tf.float32), [-1, spec.width])


def chunks(x: Any, spec: InputColumns) -> Iterator[Any]:
    """`x` cut along its batch axis so that each piece's im2col columns stay near `CHUNK_FLOATS`."""
    per_sample = max(1, int(np.prod(x.shape[1:])) * (int(np.prod(spec.patch.kernel)) if spec.patch else 1))
    step = max(1, CHUNK_FLOATS // per_sample)
    for start in range(0, int(x.shape[0]), step):
        yield x[start:start + step]


class Moments:
    """Sums over streamed rows of a consumer's input columns: XᵀX of the inputs it sees (`gram`), and with a
    reference input X_d beside them, X_dᵀX (`cross`), X_dᵀX_d (`ref_gram`) and the column sums of both.
    Accumulated in TensorFlow (float64), read as numpy."""

    def __init__(self, d: int, cross: bool = False) -> None:
        import tensorflow as tf

        self.rows = 0
        zeros = lambda *shape: tf.zeros(shape, tf.float64)  # noqa: E731
        self._sums = {"gram": zeros(d, d), "sum": zeros(d)}
        if cross:
            self._sums.update(cross=zeros(d, d), ref_sum=zeros(d), ref_gram=zeros(d, d))

    def __getattr__(self, name: str) -> Any:
        sums = self.__dict__.get("_sums", {})
        if name in ("gram", "sum", "cross", "ref_sum", "ref_gram"):
            return sums[name].numpy() if name in sums else None
        raise AttributeError(name)

    def add(self, x: Any, reference: Any = None) -> None:
        import tensorflow as tf

        self.rows += int(x.shape[0])
        s = self._sums
        s["gram"] += tf.cast(tf.matmul(x, x, transpose_a=True), tf.float64)
        s["sum"] += tf.reduce_sum(tf.cast(x, tf.float64), axis=0)
        if reference is not None:
            s["cross"] += tf.cast(tf.matmul(reference, x, transpose_a=True), tf.float64)
            s["ref_sum"] += tf.reduce_sum(tf.cast(reference, tf.float64), axis=0)
            s["ref_gram"] += tf.cast(tf.matmul(reference, reference, transpose_a=True), tf.float64)

    def accumulate(self, spec: InputColumns, x: Any, reference: Any = None) -> None:
        """Add a layer's input activation (and the reference activation of the same samples)."""
        pieces = zip(chunks(x, spec), chunks(reference, spec)) if reference is not None else (
            (piece, None) for piece in chunks(x, spec))
        for piece, ref in pieces:
            self.add(columns(spec, piece), None if ref is None else columns(spec, ref))
