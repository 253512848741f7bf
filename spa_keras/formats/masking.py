"""The two ways a parameter's value loses positions, which every format's surgery uses: `sliced` (the slim model)
and `zeroed` (a masked copy with the shapes kept, which OBSPA and training with a fixed mask use). Each format's
surgery lives with its adapter (`formats/keras/surgery.py`, `formats/onnx/surgery.py`, `formats/mxnet/surgery.py`);
originals are never mutated.

Example:

>>> import numpy as np
>>> keep = {1: np.array([True, False, True])}
>>> sliced(np.ones((2, 3)), keep).shape, zeroed(np.ones((2, 3)), keep)[0].tolist()
((2, 2), [1.0, 0.0, 1.0])
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def sliced(value: np.ndarray, masks: Mapping[int, np.ndarray]) -> np.ndarray:
    """`value` without the positions whose keep mask ({axis: bool per position}) is False."""
    for axis, keep in masks.items():
        value = np.compress(keep, value, axis=axis)
    return value


def zeroed(value: np.ndarray, masks: Mapping[int, np.ndarray]) -> np.ndarray:
    """A copy of `value` with the positions whose keep mask is False set to zero (shapes kept)."""
    value = np.array(value, copy=True)
    for axis, keep in masks.items():
        index: list[slice | np.ndarray] = [slice(None)] * value.ndim
        index[axis] = ~np.asarray(keep, bool)
        value[tuple(index)] = 0
    return value
