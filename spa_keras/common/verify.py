"""Verification of a converted or pruned model against its source, on a random batch.

Every bridge and every surgery ends here: the source framework and the target runtime run the same batch and the
largest difference, relative to the largest reference output, must stay under a tolerance. Relative, because
randomly initialised nets give outputs from 1e-8 to 1e6.

Example:

>>> import numpy as np
>>> ref = {"y": np.ones((2, 3))}
>>> compare(ref, {"y": ref["y"] + 1e-7}, source="keras", target="onnxruntime").ok
True
"""

import dataclasses
import re

import numpy as np

from spa_keras.common.errors import InputError, VerificationError

# Default tolerance on the relative difference, by target precision.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "int8": 2e-1}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input or output: its name, shape (None for a free dimension) and numpy dtype name."""

    name: str
    shape: tuple
    dtype: str = "float32"


def parse_input_shape(text):
    """Parse `--input-shape`: '1,3,224,224' for every input, or 'a:1,8;b:1,8' per input name."""
    if text is None:
        return None
    shapes = {}
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


def image_axes(shape):
    """The free (height, width) axes of a 4-D image input whose channel count is known: (2, 3) for NCHW, (1, 2) for
    NHWC; None for other inputs."""
    if len(shape) != 4:
        return None
    if shape[1] is not None and shape[2] is None and shape[3] is None:
        return (2, 3)
    if shape[3] is not None and shape[1] is None and shape[2] is None:
        return (1, 2)
    return None


def suggested_shape(shape):
    """What a user would give for `shape`'s free dimensions: batch 1, 224x224 for images, 128 for the rest.

    >>> suggested_shape((None, 3, None, None))
    (1, 3, 224, 224)
    >>> suggested_shape((None, None))
    (1, 128)
    """
    image = image_axes(shape) or ()
    return tuple(1 if i == 0 and d is None else IMAGE_SIZE if i in image else SEQUENCE_LENGTH if d is None else d
                 for i, d in enumerate(shape))


def _given(spec, input_shapes):
    """The shape `input_shapes` gives for `spec`, checked against its rank and fixed dimensions (or None)."""
    given = (input_shapes or {}).get(spec.name, (input_shapes or {}).get(None))
    if given is None:
        return None
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


def resolve_input_shapes(specs, input_shapes=None):
    """{input name: shape at batch 1} with every free dimension filled, and notes on the defaults taken.

    Given sizes come first (`input_shapes`: {name or None: shape}, names checked). Otherwise a 4-D image input's
    free height and width are `IMAGE_SIZE` and any other free dimension counts as 1; each default is a note.

    >>> from spa_keras.common.verify import TensorSpec
    >>> resolve_input_shapes([TensorSpec("x", (None, 3, None, None))])
    ({'x': (1, 3, 224, 224)}, ["input 'x' (?, 3, ?, ?) has a free height and width: taken as 224x224"])
    """
    names = {s.name for s in specs}
    unknown = sorted(set(input_shapes or {}) - names - {None})
    if unknown:
        raise InputError(f"--input-shape names {', '.join(map(repr, unknown))}, but the model's inputs are "
                         f"{', '.join(sorted(map(repr, names)))}")
    shapes, notes = {}, []
    for spec in specs:
        given = _given(spec, input_shapes)
        if given is not None:
            shapes[spec.name] = (1,) + given[1:]
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


def concrete_shape(spec, input_shapes=None, batch=2):
    """`spec.shape` with every free dimension filled: the batch from `batch`, the rest from `input_shapes`."""
    given = _given(spec, input_shapes)
    if given is not None:
        shape = [g if s is None else s for s, g in zip(spec.shape, given)]
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


def random_batch(specs, input_shapes=None, batch=2, seed=0):
    """A reproducible random batch for `specs`: floats in [-1, 1), integers in {0, 1}, booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
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


# outputs smaller than this are float32 rounding noise of O(1) activations: a comparison against them tells nothing
NEAR_ZERO = 1e-6


@dataclasses.dataclass(frozen=True)
class Verification:
    """The outcome of one comparison: largest absolute difference, output scale and their ratio.

    `spread` is how much the reference outputs vary across the batch: when they do not vary, any model that
    gives the same constant passes, and the check says it cannot tell. Outputs below `NEAR_ZERO` are within
    float32 rounding of zero: differences under ten times that pass, and the check says it cannot tell.

    >>> print(Verification("keras", "onnxruntime", 1.5e-07, 1.8e-07, 1e-4, spread=1e-7).note)
    outputs are near zero (scale 1.80e-07): float32 rounding alone is that large, the check cannot tell
    """

    source: str
    target: str
    max_abs: float
    scale: float
    tolerance: float
    spread: float = float("inf")

    @property
    def rel(self):
        return self.max_abs / self.scale if self.scale > 0 else self.max_abs

    @property
    def near_zero(self):
        return self.scale < NEAR_ZERO

    @property
    def ok(self):
        if not np.isfinite(self.max_abs):
            return False
        return self.rel <= self.tolerance or (self.near_zero and self.max_abs <= 10 * NEAR_ZERO)

    @property
    def note(self):
        """Why the check cannot tell a right model from a wrong one, or None when it can."""
        if self.near_zero:
            return (f"outputs are near zero (scale {self.scale:.2e}): float32 rounding alone is that large, the check "
                    "cannot tell")
        if self.spread <= self.tolerance * self.scale:
            return "the outputs do not depend on the input (the same for every sample): the check cannot tell"
        return None

    def __str__(self):
        verdict = "FAILED" if not self.ok else "ok" if self.note is None else f"inconclusive: {self.note}"
        return (f"{self.target} vs {self.source}: max |diff| {self.max_abs:.2e}, output scale {self.scale:.2e}, "
                f"relative {self.rel:.2e} (tolerance {self.tolerance:.0e}) {verdict}")

    def require(self):
        """Raise `VerificationError` unless the difference is within tolerance."""
        if not self.ok:
            raise VerificationError(f"{self}; the {self.target} model does not reproduce {self.source}, nothing was "
                                    "written (spa convert --tolerance accepts a larger difference)")
        return self


def natural_key(name):
    """Sort key that puts 'output_2' before 'output_10'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]


def _key(name):
    return re.sub(r"[^0-9a-zA-Z]+", "_", re.sub(r":0$", "", str(name))).strip("_").lower()


def _pairs(reference, outputs):
    """Match outputs by (normalised) name when the names agree, else by position."""
    if len(reference) != len(outputs):
        raise VerificationError(f"the source has {len(reference)} outputs {list(reference)} but the converted model "
                                f"has {len(outputs)} {list(outputs)}")
    ref_keys = {_key(k): k for k in reference}
    out_keys = {_key(k): k for k in outputs}
    if set(ref_keys) == set(out_keys) and len(ref_keys) == len(reference):
        return [(k, reference[ref_keys[n]], outputs[out_keys[n]]) for n, k in ((_key(k), k) for k in reference)]
    return [(k, r, o) for (k, r), o in zip(reference.items(), outputs.values())]


def _align(name, ref, out):
    """Return `ref` in the layout of `out`: converters may move the channel axis last (NCHW -> NHWC)."""
    ref, out = np.asarray(ref), np.asarray(out)
    if ref.shape == out.shape:
        return ref
    if ref.ndim >= 3 and np.moveaxis(ref, 1, -1).shape == out.shape:
        return np.moveaxis(ref, 1, -1)
    if ref.size == out.size and ref.squeeze().shape == out.squeeze().shape:
        return ref.reshape(out.shape)
    raise VerificationError(f"output '{name}' has shape {ref.shape} in the source but {out.shape} after conversion")


def compare(reference, outputs, *, source, target, tolerance=TOLERANCE["float32"]):
    """Compare two `{output name: array}` dicts (same batch); return a `Verification`."""
    max_abs, scale, spread = 0.0, 0.0, 0.0
    for name, ref, out in _pairs(reference, outputs):
        ref = _align(name, ref, out).astype(np.float64)
        out = np.asarray(out, np.float64)
        # NaN or infinity in the same place on both sides agree (a model that computes them on this batch); anywhere
        # else they are a difference that must not compare away
        same = (np.isnan(ref) & np.isnan(out)) | (np.isinf(ref) & (ref == out))
        ref, out = np.where(same, 0.0, ref), np.where(same, 0.0, out)
        diff = float(np.max(np.abs(ref - out), initial=0.0))
        max_abs = max(max_abs, diff if np.isfinite(diff) else float("inf"))
        scale = max(scale, float(np.max(np.abs(ref), initial=0.0, where=np.isfinite(ref))))
        if ref.ndim and len(ref) > 1:  # how much the samples of the batch differ
            spread = max(spread, float(np.max(np.abs(ref - ref[:1]), initial=0.0, where=np.isfinite(ref - ref[:1]))))
        else:
            spread = float("inf")
    return Verification(source, target, max_abs, scale, tolerance, spread)


def _fmt(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
