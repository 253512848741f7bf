"""Model inputs and outputs as data: `TensorSpec`, `--input-shape` parsing, free dimensions resolved, random
batches to run a model on.

Example:

>>> resolve_input_shapes([TensorSpec("x", (None, 3, None, None))], {None: (1, 3, 32, 32)})
({'x': (1, 3, 32, 32)}, [])
>>> sorted(random_batch([TensorSpec("x", (None, 4))], batch=3)["x"].shape)
[3, 4]
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

import numpy as np

from spa_keras.common.errors import InputError

# {input name, or None for every input: shape with batch}, as `--input-shape` gives it (keys: str or None)
InputShapes = Mapping[Any, Sequence[int]]


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input or output: its name, shape (None for a free dimension) and numpy dtype name."""

    name: str
    shape: tuple
    dtype: str = "float32"


def parse_input_shape(text: str | None) -> dict[str | None, tuple[int, ...]] | None:
    """Parse `--input-shape`: '1,3,224,224' for every input, or 'a:1,8;b:1,8' per input name."""
    if text is None:
        return None
    shapes: dict[str | None, tuple[int, ...]] = {}
    try:
        for part in str(text).split(";"):
            name, _, dims = part.rpartition(":")
            shapes[name.strip() or None] = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
    except ValueError as exc:
        raise InputError(f"--input-shape {text!r}: expected comma-separated integers such as 1,224,224,3 "
                         "(or NAME:1,224,224,3;NAME2:... for several inputs)") from exc
    if any(not dims for dims in shapes.values()):
        raise InputError(f"--input-shape {text!r}: no dimensions given; expected comma-separated integers such as "
                         "1,224,224,3")
    return shapes


# free height and width of an image input when none is given: what most image models are made for
IMAGE_SIZE = 224
# a free sequence length in suggestions
SEQUENCE_LENGTH = 128


def image_axes(shape: Sequence[int | None]) -> tuple[int, int] | None:
    """The free (height, width) axes of a 4-D image input whose channel count is known: (2, 3) for NCHW, (1, 2) for
    NHWC; None for other inputs."""
    if len(shape) != 4:
        return None
    if shape[1] is not None and shape[2] is None and shape[3] is None:
        return (2, 3)
    if shape[3] is not None and shape[1] is None and shape[2] is None:
        return (1, 2)
    return None


def suggested_shape(shape: Sequence[int | None]) -> tuple[int, ...]:
    """What a user would give for `shape`'s free dimensions: batch 1, 224x224 for images, 128 for the rest.

    >>> suggested_shape((None, 3, None, None))
    (1, 3, 224, 224)
    >>> suggested_shape((None, None))
    (1, 128)
    """
    image: tuple[int, ...] = image_axes(shape) or ()
    return tuple(1 if i == 0 and d is None else IMAGE_SIZE if i in image else SEQUENCE_LENGTH if d is None else d
                 for i, d in enumerate(shape))


def _given(spec: TensorSpec, input_shapes: InputShapes | None) -> tuple[int, ...] | None:
    """The shape `input_shapes` gives for `spec`, checked against its rank and fixed dimensions (or None)."""
    given = (input_shapes or {}).get(spec.name, (input_shapes or {}).get(None))
    if given is None or (not spec.shape and spec.name not in (input_shapes or {})):
        return None  # a scalar input (an If's condition) has no dimension to fill: a shape for every input skips it
    if len(given) != len(spec.shape):
        raise InputError(f"input '{spec.name}' has rank {len(spec.shape)} {_fmt(spec.shape)}, but --input-shape "
                         f"gives {len(given)} dimensions {_fmt(given)}; for example --input-shape "
                         f"{','.join(map(str, suggested_shape(spec.shape)))}")
    for axis, (fixed, g) in enumerate(zip(spec.shape, given)):
        if int(g) < 1:
            raise InputError(f"--input-shape {_fmt(given)}: dimension {axis} is {g}; sizes are positive")
        if axis and fixed is not None and int(g) != fixed:
            raise InputError(f"input '{spec.name}' is {_fmt(spec.shape)}, but --input-shape {_fmt(given)} gives "
                             f"{g} at axis {axis} where the model has {fixed} (channels first or last?)")
    return tuple(int(g) for g in given)


def resolve_input_shapes(specs: Sequence[TensorSpec], input_shapes: InputShapes | None = None
                         ) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """{input name: shape at batch 1} with every free dimension filled, and notes on the defaults taken.

    Given sizes come first (`input_shapes`: {name or None: shape}, names checked). Otherwise a 4-D image input's
    free height and width are `IMAGE_SIZE` and any other free dimension counts as 1; each default is a note.

    >>> from spa_keras.common.tensors import TensorSpec
    >>> resolve_input_shapes([TensorSpec("x", (None, 3, None, None))])
    ({'x': (1, 3, 224, 224)}, ["input 'x' (?, 3, ?, ?) has a free height and width: taken as 224x224"])
    """
    names = {s.name for s in specs}
    unknown = sorted(n for n in set(input_shapes or {}) - names if n is not None)
    if unknown:
        raise InputError(f"--input-shape names {', '.join(map(repr, unknown))}, but the model's inputs are "
                         f"{', '.join(sorted(map(repr, names)))}")
    shapes: dict[str, tuple[int, ...]] = {}
    notes: list[str] = []
    for spec in specs:
        given = _given(spec, input_shapes)
        if given is not None:
            shapes[spec.name] = (1,) + given[1:] if given else ()
            continue
        image = image_axes(spec.shape)
        if image:
            notes.append(f"input '{spec.name}' {_fmt(spec.shape)} has a free height and width: taken as "
                         f"{IMAGE_SIZE}x{IMAGE_SIZE}")
        elif None in spec.shape[1:]:
            notes.append(f"input '{spec.name}' {_fmt(spec.shape)} has free dimensions: taken as 1 (FLOPs count "
                         "them as 1)")
        shapes[spec.name] = tuple(1 if i == 0 else IMAGE_SIZE if i in (image or ()) else (d or 1)
                                  for i, d in enumerate(spec.shape))
    return shapes, notes


def concrete_shape(spec: TensorSpec, input_shapes: InputShapes | None = None, batch: int = 2) -> tuple[int, ...]:
    """`spec.shape` with every free dimension filled: the batch from `batch`, the rest from `input_shapes`."""
    given = _given(spec, input_shapes)
    if given is not None:
        shape = [g if s is None else s for s, g in zip(spec.shape, given)]
        if shape:  # a scalar input (an If's condition) has no batch axis
            shape[0] = batch if spec.shape[0] is None else spec.shape[0]
        return tuple(shape)
    shape = list(spec.shape)
    if shape and shape[0] is None:
        shape[0] = batch
    free = [i for i, d in enumerate(shape) if d is None]
    if free:
        raise InputError(f"input '{spec.name}' has free dimensions {_fmt(spec.shape)}: pass --input-shape "
                         f"(for example --input-shape {','.join(map(str, suggested_shape(spec.shape)))})")
    return tuple(shape)


def random_batch(specs: Sequence[TensorSpec], input_shapes: InputShapes | None = None, batch: int = 2,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """A reproducible random batch for `specs`: floats in [-1, 1), integers in {0, 1}, booleans."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = concrete_shape(spec, input_shapes, batch)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.uniform(-1, 1, shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, 2, shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            raise InputError(f"input '{spec.name}' has dtype {dtype}, which spa-keras cannot generate data for")
    return feeds


def natural_key(name: Any) -> list[int | str]:
    """Sort key that puts 'output_2' before 'output_10'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]


def _fmt(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
