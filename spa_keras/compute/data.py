"""Batches of (x, y) from whatever the user has, for the gradient criteria, OBSPA's calibration and the callback.

`data=` may be a `tf.data.Dataset` of batched (x, y) or (x, y, sample_weight) elements (sample weights are not
used), arrays `(x, y)` (x may be a dict or list of arrays for several inputs; y an array or a list), or any iterable
or generator of (x, y) batches. A one-shot generator
is read once: the batches read are kept, so several passes (GraSP, iterative pruning) see the same batches.

Example:

>>> x, y = np.zeros((70, 4)), np.zeros(70)
>>> [xb.shape for xb, yb in Batches((x, y)).take(3, batch_size=32)]
[(32, 4), (32, 4), (6, 4)]
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from spa_keras.common.errors import InputError

Batch = tuple[Any, Any]  # (x, y): arrays, or dicts or lists of arrays for several inputs


def _is_array(obj: Any) -> bool:
    return hasattr(obj, "shape") and len(getattr(obj, "shape", ())) >= 1


def length(x: Any) -> int:
    """Rows of an array, or of the first array of a dict or list of them."""
    if isinstance(x, dict):
        x = next(iter(x.values()))
    elif isinstance(x, (list, tuple)):
        x = x[0]
    return int(x.shape[0])


def _slice(x: Any, start: int, stop: int) -> Any:
    if isinstance(x, dict):
        return {k: v[start:stop] for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(v[start:stop] for v in x)
    return x[start:stop]


def _arrays(data: Any) -> bool:
    """True for `(x, y)` given as arrays (not a list of batches)."""
    if not isinstance(data, tuple) or len(data) not in (2, 3):
        return False
    x, y = data[0], data[1]
    x_ok = _is_array(x) or (isinstance(x, dict) and x and all(_is_array(v) for v in x.values())) or (
        isinstance(x, list) and x and all(_is_array(v) for v in x))
    if not x_ok or not (_is_array(y) or isinstance(y, list)):
        return False
    if length(x) != len(y):
        raise InputError(f"data=(x, y): x has {length(x)} rows and y {len(y)}; give one label per row")
    return True


def _pair(element: Any, where: str) -> Batch:
    if isinstance(element, (tuple, list)) and len(element) in (2, 3):
        return element[0], element[1]
    raise InputError(f"{where} must yield (x, y) batches (or (x, y, sample_weight)); got a "
                     f"{type(element).__name__}")


class Batches:
    """Re-iterable (x, y) batches over `data`; see the module docstring for what `data` may be."""

    def __init__(self, data: Any) -> None:
        if data is None:
            raise InputError("data=None: give a tf.data.Dataset, arrays (x, y) or a generator of (x, y) batches")
        self.data = data
        self._cache: list[Batch] = []
        self._iterator: Iterator[Any] | None = None

    @classmethod
    def of(cls, data: Any) -> Batches:
        return data if isinstance(data, cls) else cls(data)

    def take(self, count: int, batch_size: int = 32) -> list[Batch]:
        """Up to `count` batches; arrays are cut into `batch_size` rows (the last batch may be shorter)."""
        count = max(1, int(count))
        data = self.data
        if _arrays(data):
            x, y = data[0], np.asarray(data[1]) if isinstance(data[1], list) else data[1]
            n = length(x)
            batches = [(_slice(x, i, i + batch_size), y[i:i + batch_size]) for i in range(0, n, batch_size)][:count]
        elif _is_tf_dataset(data):
            batches = [_pair(e, "the tf.data.Dataset") for e in data.take(count)]
        elif iter(data) is not data:  # a re-iterable collection (a list of batches)
            batches = []
            for element in data:
                if len(batches) == count:
                    break
                batches.append(_pair(element, "data"))
        else:  # a one-shot iterator or generator: read once, keep what was read
            if self._iterator is None:
                self._iterator = data
            while len(self._cache) < count:
                try:
                    self._cache.append(_pair(next(self._iterator), "the data generator"))
                except StopIteration:
                    break
            batches = self._cache[:count]
        if not batches:
            raise InputError("data= gave no batches")
        return batches


def _is_tf_dataset(data: Any) -> bool:
    try:
        import tensorflow as tf
    except ImportError:
        return False
    return isinstance(data, tf.data.Dataset)


def as_numpy(tensor: Any) -> np.ndarray:
    return np.asarray(tensor.numpy() if hasattr(tensor, "numpy") else tensor)
