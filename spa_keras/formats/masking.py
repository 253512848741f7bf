"""Surgery: apply removed channels (and new values of kept weights) to a model and return a new, smaller one.

One package per format (`onnx/`, `keras/`), each with its own table of per-op rewriters or per-layer resizers. The
engine picks the surgery by the format of the graph's parameter handles (`SPAGraph.format`); originals are never
mutated. Both surgeries also make masked copies (same shapes, removed positions zero), which OBSPA and training
with a fixed mask use; `sliced` and `zeroed` are the two ways one value loses positions.

Example:

>>> import numpy as np
>>> keep = {1: np.array([True, False, True])}
>>> sliced(np.ones((2, 3)), keep).shape, zeroed(np.ones((2, 3)), keep)[0].tolist()
((2, 2), [1.0, 0.0, 1.0])
"""

import numpy as np


def sliced(value: np.ndarray, masks: dict) -> np.ndarray:
    """`value` without the positions whose keep mask ({axis: bool per position}) is False."""
    for axis, keep in masks.items():
        value = np.compress(keep, value, axis=axis)
    return value


def zeroed(value: np.ndarray, masks: dict) -> np.ndarray:
    """A copy of `value` with the positions whose keep mask is False set to zero (shapes kept)."""
    value = np.array(value, copy=True)
    for axis, keep in masks.items():
        index = [slice(None)] * value.ndim
        index[axis] = ~np.asarray(keep, bool)
        value[tuple(index)] = 0
    return value
